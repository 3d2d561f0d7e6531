package registrar

import (
	"context"
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// reap is the single waiter. With all set (the registrar is PID 1, so every
// orphan in the container is reparented to it) it reaps every child and
// routes the app's status to c; otherwise it waits for the app's pid only,
// and kills what is left of the app's process group before reaping it.
// sigchld must be subscribed to SIGCHLD before the app starts. It returns
// when the app is reaped (all: when ctx ends).
func reap(ctx context.Context, c *Child, all bool, sigchld <-chan os.Signal) {
	target := c.pid
	if all {
		target = -1
	}
	for {
		for all || sweep(c) {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(target, &ws, unix.WNOHANG, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if errors.Is(err, unix.ECHILD) && !all {
				// Someone else waited for it: status unknown.
				c.log.Error("app reaped elsewhere, status unknown", "pid", c.pid)
				c.setExited(Status{Code: 1})
				return
			}
			if err != nil || pid <= 0 {
				break
			}
			if pid != c.pid {
				c.log.Debug("reaped orphan", "pid", pid)
				continue
			}
			c.setExited(statusOf(ws))
			if !all {
				return
			}
		}
		select {
		case <-sigchld:
		case <-ctx.Done():
			return
		}
	}
}

// sweep reports whether the app has exited (or cannot be waited for), and
// once it has, SIGKILLs what is left of its process group: the app may
// leave children behind, and they must not outlive the registrar either.
// The app is not reaped yet, so its pid still names this group alone. As
// PID 1 there is no need: the kernel ends the container with it.
func sweep(c *Child) bool {
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PID, c.pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	if errors.Is(err, unix.EINTR) {
		return sweep(c)
	}
	if err != nil || info.Signo == 0 {
		return err != nil // ECHILD: let Wait4 report it
	}
	if err := unix.Kill(-c.pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		c.log.Warn("kill the app's process group", "pid", c.pid, "err", err)
	}
	return true
}
