// Package integration_test runs the renderer binary against a real etcd and a
// real nginx and checks, with HTTP requests through nginx, that traffic
// reaches exactly the registered backends.
//
// Each test builds a rig: an embedded etcd (internal/etcdtest), an nginx with
// its own prefix (internal/nginxtest) that includes the rendered files, a
// confdir holding the SHIPPED templates and resources rewritten to point at
// that nginx, and the renderer process (built once in TestMain by
// internal/proctest, as `make build` builds it). reload_cmd is a wrapper that
// logs each call and runs nginx-reload, so a reload counts only when nginx
// really applied the new config.
package integration_test

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/proc"
	"github.com/rollcall/rollcall/internal/proctest"
)

// bins are the programs TestMain built.
var bins proctest.Binaries

func TestMain(m *testing.M) { proctest.Main(m, &bins) }

// start runs bin until the test ends; it must then exit cleanly on SIGTERM
// within 10s.
func start(t *testing.T, bin string, args ...string) *proc.Proc {
	t.Helper()
	name := filepath.Base(bin)
	p := proctest.Start(t, name, nil, 10*time.Second, append([]string{bin}, args...)...)
	t.Cleanup(func() { // before proctest's own cleanup, which prints the log on failure
		if err := p.Stop(syscall.SIGTERM, 10*time.Second); err != nil {
			t.Errorf("%s on SIGTERM: %v", name, err)
		}
	})
	return p
}
