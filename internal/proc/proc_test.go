package proc

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/waitfor"
)

// The test binary is also the supervised program: "ignore-term" prints
// ready and ignores SIGTERM until killed.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "ignore-term" {
		signal.Ignore(syscall.SIGTERM)
		os.Stdout.WriteString("ready\n")
		select {}
	}
	os.Exit(m.Run())
}

func TestStopKillsAfterGrace(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a process")
	}
	t.Parallel()
	p, err := Start(Spec{Name: "stubborn", Args: []string{os.Args[0], "ignore-term"}, Log: filepath.Join(t.TempDir(), "log")})
	if err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 10*time.Second, "stubborn says ready", func() error {
		if out := p.Output(); !strings.Contains(out, "ready") {
			return fmt.Errorf("output %q", out)
		}
		return nil
	})
	t0 := time.Now()
	err = p.Stop(syscall.SIGTERM, 200*time.Millisecond)
	if took := time.Since(t0); err == nil || !strings.Contains(err.Error(), "killed") || took > 2*time.Second {
		t.Fatalf("Stop of a process ignoring SIGTERM = %v after %v; want a 'killed' error within 2s", err, took)
	}
	if p.Running() || p.Exited() == nil || p.Ended().IsZero() {
		t.Fatalf("after Stop: running %v, exited %v, ended %v; want exited", p.Running(), p.Exited(), p.Ended())
	}
}

func TestTail(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 5, "a\nb\nc"},
		{"a\nb\nc\n", 2, "... (1 lines before)\nb\nc"},
		{"", 1, ""},
	} {
		if got := Tail(tc.in, tc.n); got != tc.want {
			t.Errorf("Tail(%q, %d) = %q; want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
