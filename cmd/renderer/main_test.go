package main

import (
	"bytes"
	"fmt"
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
	if err := os.WriteFile(filepath.Join(bad, "renderer.toml"), []byte("colour = 1\n"), 0o644); err != nil {
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
		{"unknown config key", []string{"--confdir", bad}, 2, "unknown key(s) colour"},
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
			got := run(tc.args, func(string) string { return "" }, &stderr)
			if got != tc.want || !strings.Contains(stderr.String(), tc.out) {
				t.Errorf("run(%q) = %d, stderr %q; want %d and %q", tc.args, got, stderr.String(), tc.want, tc.out)
			}
		})
	}
}
