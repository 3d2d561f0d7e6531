package registrar

import (
	"context"
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// reap is the single waiter. With all set (the registrar is PID 1, so every
// orphan in the container is reparented to it) it reaps every child and
// routes the app's status to c; otherwise it waits for the app's pid only.
// sigchld must be subscribed to SIGCHLD before the app starts. It returns
// when the app is reaped (all: when ctx ends).
func reap(ctx context.Context, c *Child, all bool, sigchld <-chan os.Signal) {
	target := c.pid
	if all {
		target = -1
	}
	for {
		for {
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
