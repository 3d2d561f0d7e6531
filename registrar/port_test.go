package registrar

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestParseProcNet(t *testing.T) {
	t.Parallel()
	const tcp = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
`
	const tcp6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:4E20 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 100 0 0 10 0
`
	tests := []struct {
		name    string
		in      string
		want    []uint16
		wantErr bool
	}{
		{"ipv4: listeners only, not the established 40000", tcp, []uint16{22, 8080}, false},
		{"ipv6", tcp6, []uint16{20000}, false},
		{"header only", "  sl local_address\n", nil, false},
		{"short line", "hdr\n 0: x\n", nil, true},
		{"bad port", "hdr\n 0: 0100007F:XYZ 00000000:0000 0A\n", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := map[uint16]bool{}
			err := parseProcNet(strings.NewReader(tc.in), got)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseProcNet() err = %v; want err %v", err, tc.wantErr)
			}
			if ports := slices.Sorted(maps.Keys(got)); !tc.wantErr && !slices.Equal(ports, tc.want) {
				t.Fatalf("parseProcNet() = %v; want %v", ports, tc.want)
			}
		})
	}
}

func TestListeningPortsSeesOurListener(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	got, err := listeningPorts()
	if err != nil {
		t.Fatal(err)
	}
	if !got[port] {
		t.Fatalf("listeningPorts() lacks %d, which we listen on", port)
	}
}

// busyRange returns a two-port range whose first port is listened on.
func busyRange(t *testing.T) (PortRange, uint16) {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		p := uint16(l.Addr().(*net.TCPAddr).Port)
		if p < 65535 && bindFree(netip.MustParseAddr("127.0.0.1"), p+1) == nil {
			return PortRange{p, p + 1}, p + 1
		}
	}
	t.Fatal("no port pair found")
	return PortRange{}, 0
}

func TestPickPortLocal(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	ip := netip.MustParseAddr("127.0.0.1")
	r, free := busyRange(t)
	for range 5 { // random order: every try must skip the busy port
		got, err := pickPort(context.Background(), portPick{IP: ip, Range: r}, log)
		if err != nil || got != free {
			t.Fatalf("pickPort(%v) = %d, %v; want %d (the other one is listened on)", r, got, err, free)
		}
	}
	one := PortRange{r.Lo, r.Lo}
	if got, err := pickPort(context.Background(), portPick{IP: ip, Range: one}, log); err == nil {
		t.Fatalf("pickPort(%v) = %d; want an error, the only port is busy", one, got)
	}
}

func TestPickPortClaims(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	ip := netip.MustParseAddr("127.0.0.1")
	r, free := busyRange(t)
	tests := []struct {
		name    string
		claim   func(ctx context.Context, key, value string) (bool, error)
		want    uint16
		wantErr bool
		tries   int
	}{
		{"claimed", func(ctx context.Context, key, value string) (bool, error) { return true, nil }, free, false, 1},
		{"taken by another", func(ctx context.Context, key, value string) (bool, error) { return false, nil }, 0, true, 1},
		{"etcd down: local only after retries", func(ctx context.Context, key, value string) (bool, error) {
			return false, fmt.Errorf("unavailable")
		}, free, false, claimTries},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var keys []string
			claim := func(ctx context.Context, key, value string) (bool, error) {
				mu.Lock()
				keys = append(keys, key+"="+value)
				mu.Unlock()
				return tc.claim(ctx, key, value)
			}
			p := portPick{IP: ip, Range: r, ClaimDir: "/_ports/127.0.0.1/", Service: "a_b", Claim: claim}
			got, err := pickPort(context.Background(), p, log)
			if got != tc.want || (err != nil) != tc.wantErr {
				t.Fatalf("pickPort() = %d, %v; want %d, err %v", got, err, tc.want, tc.wantErr)
			}
			want := slices.Repeat([]string{fmt.Sprintf("/_ports/127.0.0.1/%d=a_b", free)}, tc.tries)
			if !slices.Equal(keys, want) {
				t.Fatalf("claims tried = %q; want %q (the busy port is never claimed)", keys, want)
			}
		})
	}
}

// TestPickPortSkipsListening: a port in the host's socket table as
// listening is never handed out, even when both bind tests pass (a
// listener the bind tests cannot see: another namespace's view, a race).
func TestPickPortSkipsListening(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	ip := netip.MustParseAddr("127.0.0.1")
	r, free := busyRange(t)
	r.Lo = free // one bind-free port
	if err := bindFree(ip, free); err != nil {
		t.Fatal(err)
	}
	claimed := false
	p := portPick{IP: ip, Range: r, ClaimDir: "/_ports/127.0.0.1/", Service: "a_b",
		Claim:     func(ctx context.Context, key, value string) (bool, error) { claimed = true; return true, nil },
		Listening: func() (map[uint16]bool, error) { return map[uint16]bool{free: true}, nil }}
	if got, err := pickPort(context.Background(), p, log); err == nil || claimed {
		t.Fatalf("pickPort(%v) = %d, %v (claimed %v); want an error: the socket table lists %d as listening", r, got, err, claimed, free)
	}
	p.Listening = func() (map[uint16]bool, error) { return nil, nil }
	if got, err := pickPort(context.Background(), p, log); err != nil || got != free {
		t.Fatalf("pickPort(%v) with no listener = %d, %v; want %d", r, got, err, free)
	}
}

// TestPickPortWildcardBind: a port listened on at another local address
// (127.0.0.2 here, advertising 127.0.0.1) fails the wildcard bind test and
// is never handed out, even without the socket table.
func TestPickPortWildcardBind(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal("listen on 127.0.0.2 (Linux routes all of 127/8 to lo):", err)
	}
	defer l.Close()
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	ip := netip.MustParseAddr("127.0.0.1")
	if pl, err := net.Listen("tcp", net.JoinHostPort(ip.String(), fmt.Sprint(port))); err != nil {
		t.Skipf("127.0.0.1:%d does not bind here, the test would show nothing: %v", port, err)
	} else {
		pl.Close()
	}
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	p := portPick{IP: ip, Range: PortRange{port, port},
		Listening: func() (map[uint16]bool, error) { return nil, nil }}
	if got, err := pickPort(context.Background(), p, log); err == nil {
		t.Fatalf("pickPort(%d-%d) = %d; want an error: 127.0.0.2:%d is listened on", port, port, got, port)
	}
}
