// Package rolling_test proves, with real processes, that a rolling deploy
// behind nginx loses no request: real etcd (internal/etcdtest), a real
// renderer process, a real nginx (internal/nginxtest) and every backend a
// `registrar -- demo-backend` process, under a load of 32 concurrent clients.
package rolling_test

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// bin holds the binaries TestMain builds; buildErr is why they are missing.
var (
	bin      string
	buildErr error
	repoRoot = filepath.Join("..", "..")
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "rollcall-rolling-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = dir
	buildErr = build(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// build compiles the programs the tests run; nginx-reload only when present.
func build(dir string) error {
	pkgs := []string{"./cmd/registrar", "./cmd/renderer", "./cmd/demo-backend"}
	if _, err := os.Stat(filepath.Join(repoRoot, "cmd", "nginx-reload")); err == nil {
		pkgs = append(pkgs, "./cmd/nginx-reload")
	}
	cmd := exec.Command("go", append([]string{"build", "-trimpath", "-o", dir + string(os.PathSeparator)}, pkgs...)...)
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %v: %v\n%s", pkgs, err, out)
	}
	return nil
}

// needBinaries skips in -short mode and fails when the build failed.
func needBinaries(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("real etcd, nginx and processes: skipped in -short mode")
	}
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

// binPath is the path of a built program.
func binPath(name string) string { return filepath.Join(bin, name) }
