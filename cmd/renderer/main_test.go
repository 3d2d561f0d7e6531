package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rollcall/rollcall/internal/proctest"
)

func TestExitCodes(t *testing.T) {
	t.Parallel()
	confdir := t.TempDir()
	for _, d := range []string{"conf.d", "templates"} {
		if err := os.Mkdir(filepath.Join(confdir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "renderer.toml"), []byte("interval = \"soon\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port := proctest.FreePort(t) // nothing listens there
	tests := []struct {
		name string
		args []string
		want int
		out  string
	}{
		{"unknown flag", []string{"--bogus"}, 2, "flag provided but not defined"},
		{"help", []string{"-h"}, 2, "usage: renderer"},
		{"help names refused flags apart", []string{"-h"}, 2, "\nRefused (confd's other backends, and unsupported): -app-id -auth-token"},
		{"bad config file", []string{"--confdir", bad}, 2, "renderer.toml"},
		{"confd backend consul", []string{"-backend", "consul", "-node", "http://127.0.0.1:8500"}, 2, `renderer: backend "consul": not supported`},
		{"confd vault flag", []string{"-backend", "etcdv3", "-auth-type", "app-id"}, 2, "-auth-type: a flag of confd's vault backend"},
		{"version", []string{"-version"}, 0, ""},
		{"bad wait", []string{"--wait", "x"}, 2, "--wait"},
	}
	if !testing.Short() {
		tests = append(tests, struct {
			name string
			args []string
			want int
			out  string
		}{"onetime, etcd unreachable", []string{"--confdir", confdir, "--onetime", "--endpoints", fmt.Sprintf("127.0.0.1:%d", port)}, 1, "renderer stopped"})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			got := run(tc.args, func(string) string { return "" }, io.Discard, &stderr)
			if got != tc.want || !strings.Contains(stderr.String(), tc.out) {
				t.Errorf("run(%q) = %d, stderr %q; want %d and %q", tc.args, got, stderr.String(), tc.want, tc.out)
			}
		})
	}
}

// TestVersion: confd's -version prints the version on stdout and exits 0.
func TestVersion(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-version"}, func(string) string { return "" }, &stdout, &stderr); code != 0 ||
		!strings.HasPrefix(stdout.String(), "renderer (rollcall) ") || stderr.Len() != 0 {
		t.Errorf("-version: exit %d, stdout %q, stderr %q; want 0 and the version", code, stdout.String(), stderr.String())
	}
}
