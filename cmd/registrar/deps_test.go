package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLeanBinary: the registrar ships in every app image, so it links the
// etcd client only: no etcd server, no embedded etcd, no Prometheus.
func TestLeanBinary(t *testing.T) {
	t.Parallel()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("go tool not in PATH (go test puts it there):", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"go.etcd.io/etcd/server/", "github.com/prometheus/", "/embedetcd", "/internal/etcdtest"} {
			if strings.Contains(dep, banned) {
				t.Errorf("cmd/registrar imports %s (%s is not allowed in the app image)", dep, banned)
			}
		}
	}
}
