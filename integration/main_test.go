// Package integration_test runs the renderer binary against a real etcd and a
// real nginx and checks, with HTTP requests through nginx, that traffic
// reaches exactly the registered backends.
//
// Each test builds a rig: an embedded etcd (internal/etcdtest), an nginx with
// its own prefix (internal/nginxtest) that includes the rendered files, a
// confdir holding the SHIPPED templates and resources rewritten to point at
// that nginx, and the renderer process (built once in TestMain). reload_cmd
// is a wrapper that logs each call and runs nginx-reload, so a reload counts
// only when nginx really applied the new config.
package integration_test

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// bins holds the binaries TestMain built, or why it could not.
var bins struct {
	renderer, nginxReload string
	err                   error
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := func() int {
		dir, err := os.MkdirTemp("", "rollcall-integration-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		if !testing.Short() {
			bins.err = build(dir)
		}
		bins.renderer = filepath.Join(dir, "renderer")
		bins.nginxReload = filepath.Join(dir, "nginx-reload")
		return m.Run()
	}()
	os.Exit(code)
}

// build compiles the two programs the tests run (without -race: it applies
// to the test process).
func build(dir string) error {
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	cmd := exec.Command(gobin, "build", "-o", dir+string(filepath.Separator), "./cmd/renderer", "./cmd/nginx-reload")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/renderer ./cmd/nginx-reload: %v\n%s", err, out)
	}
	return nil
}
