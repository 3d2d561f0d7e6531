package registrar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rollcall/rollcall/internal/waitfor"
)

// reaperMain runs run(reapAll) with the test app given by args
// (etcd endpoint, then the app's arguments) and exits with its code.
func reaperMain(args []string) int {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 99
	}
	c := DefaultConfig()
	c.App, c.Env, c.IP = "web", "PRE", netipLoopback
	c.Endpoints, c.Check, c.TTL = []string{args[0]}, "none", testTTL
	c.Command = append([]string{os.Args[0], childArg}, args[1:]...)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	code, err := run(context.Background(), c, log, make(chan os.Signal), true)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	return code
}

// procState is the state letter of pid ("Z" zombie), or an error once the
// process is gone.
func procState(pid string) (string, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return "", err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return f[0], nil
}

// TestReapOrphans: as the reaper of the container (PID 1, here a child
// subreaper) the registrar reaps orphans that exit while the app runs, and
// still exits with the app's status.
func TestReapOrphans(t *testing.T) {
	h := newHarness(t)
	a := h.newApp()
	cmd := exec.Command(os.Args[0], reaperArg, h.etcd.Endpoint, "out="+a.out, "no-listen=1", "orphan=1", "exit-after=3s", "exit=4")
	cmd.Stdout, cmd.Stderr = t.Output(), t.Output()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	orphan := a.wait(t, "orphan", 10*time.Second).detail
	waitfor.Cond(t, 2*time.Second, "orphan "+orphan+" reaped", func() error {
		st, err := procState(orphan)
		if err != nil {
			return nil // gone: reaped
		}
		return fmt.Errorf("state %s", st)
	})
	if _, exited := a.find("exit"); exited {
		t.Fatal("the app exited before the orphan was reaped; the test shows nothing")
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 4 {
		t.Fatalf("registrar exit = %v; want the app's 4", err)
	}
}
