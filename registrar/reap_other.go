//go:build unix && !linux

package registrar

import (
	"context"
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// reap waits for the app's pid only. Reaping every zombie as PID 1 is for
// Linux containers (reap_linux.go); elsewhere the registrar runs for
// development only.
func reap(ctx context.Context, c *Child, _ bool, sigchld <-chan os.Signal) {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(c.pid, &ws, unix.WNOHANG, nil)
		switch {
		case pid == c.pid:
			c.setExited(statusOf(ws))
			return
		case err != nil && !errors.Is(err, unix.EINTR):
			c.log.Error("wait for app", "pid", c.pid, "err", err)
			c.setExited(Status{Code: 1})
			return
		}
		select {
		case <-sigchld:
		case <-ctx.Done():
			return
		}
	}
}
