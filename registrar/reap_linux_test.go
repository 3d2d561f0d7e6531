package registrar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rollcall/rollcall/internal/waitfor"
)

// reaperMain runs run(reapAll) as a child subreaper with the test app
// given by args (etcd endpoint, then the app's arguments).
func reaperMain(args []string) int {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 99
	}
	return runMain(args, func(ctx context.Context, c Config, log *slog.Logger) (int, error) {
		return run(ctx, c, log, make(chan os.Signal), true)
	})
}

// pid1Main is reaperMain with Run itself: real signals, and PID-1 reaping
// because os.Getpid() is 1 in the new PID namespace.
func pid1Main(args []string) int { return runMain(args, Run) }

// runMain runs the registrar with r as a process of its own and returns
// its exit code.
func runMain(args []string, r func(context.Context, Config, *slog.Logger) (int, error)) int {
	c := DefaultConfig()
	c.App, c.Env, c.IP = "web", "PRE", netipLoopback
	c.Endpoints, c.Check, c.TTL = []string{args[0]}, "none", testTTL
	c.Command = append([]string{os.Args[0], childArg}, args[1:]...)
	code, err := r(context.Background(), c, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	return code
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

// TestReapAsPID1 runs Run as PID 1 of a new PID namespace, as in a
// container: it catches SIGTERM (the kernel drops signals PID 1 has no
// handler for), reaps an orphan while the app runs, drains and exits with
// the app's status.
func TestReapAsPID1(t *testing.T) {
	unshare, err := exec.LookPath("unshare")
	if err != nil || os.Geteuid() != 0 || exec.Command(unshare, "--pid", "--fork", "--mount-proc", "true").Run() != nil {
		t.Skip("needs root and unshare --pid to be PID 1")
	}
	h := newHarness(t)
	a := h.newApp()
	cmd := exec.Command(unshare, "--pid", "--fork", "--mount-proc", "--kill-child",
		os.Args[0], pid1Arg, h.etcd.Endpoint, "out="+a.out, "orphan=1", "exit=6")
	cmd.Stdout, cmd.Stderr = t.Output(), t.Output()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	a.wait(t, "orphan-reaped", 10*time.Second)
	key, value := h.instanceKey(t, a)
	h.registered(key, value, 10*time.Second)

	// PID 1 inside is unshare's child outside.
	var init int
	waitfor.Cond(t, 5*time.Second, "PID 1's pid outside the namespace", func() error {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
		if err != nil {
			return err
		}
		_, err = fmt.Sscan(string(b), &init)
		return err
	})
	if err := unix.Kill(init, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 6 {
		t.Fatalf("registrar as PID 1 exit = %v; want the app's 6", err)
	}
	if ev, _ := a.find("sigterm"); ev.detail != "key=unchecked" {
		t.Fatalf("app events %v; want its SIGTERM", a.events())
	}
	h.absent(key, time.Second)
}
