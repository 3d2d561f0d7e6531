package registrar

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// childArg as os.Args[1] turns the test binary into the test app.
const childArg = "rollcall-test-child"

// reaperArg as os.Args[1] runs the registrar as a child subreaper, the
// stand-in for PID 1: orphans in the app's tree are reparented to it.
const reaperArg = "rollcall-test-reaper"

// pid1Arg as os.Args[1] runs the exported Run, as unshare's PID 1.
const pid1Arg = "rollcall-test-pid1"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == childArg {
		os.Exit(childMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == reaperArg {
		os.Exit(reaperMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == pid1Arg {
		os.Exit(pid1Main(os.Args[2:]))
	}
	code := m.Run()
	if code == 0 && !testing.Short() {
		if left := leakedGoroutines(5 * time.Second); left != "" {
			fmt.Fprintf(os.Stderr, "goroutines left after all tests:\n%s\n", left)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines waits up to d for every goroutine but this one and the
// signal package's (started by signal.Notify, never stopped) to end, and
// returns the stacks of those that did not. etcd's testutil leak check does
// not know the signal goroutine's current name.
func leakedGoroutines(d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var left []string
		for _, g := range strings.Split(string(buf), "\n\n")[1:] {
			if !strings.Contains(g, "os/signal.loop") {
				left = append(left, g)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return strings.Join(left, "\n\n")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
