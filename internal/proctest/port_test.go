package proctest

import "testing"

// TestFreePortReserved: a port FreePort returned is out of the kernel's
// ephemeral range and cannot be reserved again (in this process or
// another: flock) until its test ends.
func TestFreePortReserved(t *testing.T) {
	t.Parallel()
	var port int
	t.Run("holder", func(t *testing.T) {
		port = FreePort(t)
		if port < reservedLow || port >= reservedHigh {
			t.Fatalf("FreePort = %d; want it in %d-%d", port, reservedLow, reservedHigh-1)
		}
		if f, ok := reserve(t, portsDir(), port); ok {
			f.Close()
			t.Fatalf("port %d reserved twice", port)
		}
		if again := FreePort(t); again == port {
			t.Fatalf("FreePort returned %d twice", port)
		}
	})
	// The holder ended: its ports are free to reserve again.
	f, ok := reserve(t, portsDir(), port)
	if !ok {
		t.Fatalf("port %d still reserved after its test ended", port)
	}
	f.Close()
}
