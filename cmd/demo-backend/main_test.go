package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/proctest"
	"github.com/rollcall/rollcall/internal/waitfor"
)

// TestMain lets the test binary act as demo-backend itself.
func TestMain(m *testing.M) {
	if os.Getenv("DEMO_BACKEND_TEST_CHILD") == "1" {
		if err := run(os.Args[1:], nil); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestServeAndReport(t *testing.T) {
	t.Parallel()
	port := proctest.FreePort(t)
	report := filepath.Join(t.TempDir(), "report.json")
	cmd := exec.Command(os.Args[0], "--report", report)
	cmd.Env = append(os.Environ(), "DEMO_BACKEND_TEST_CHILD=1", fmt.Sprintf("PORT=%d", port), "HOST_IP=127.0.0.1")
	cmd.Stderr = t.Output()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	want := fmt.Sprintf("127.0.0.1:%d", port)
	url := "http://" + want + "/"
	for i := range 3 {
		waitfor.Cond(t, 5*time.Second, "backend answers", func() error {
			resp, err := http.Get(url)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if got := strings.TrimSpace(string(b)); got != want || resp.Header.Get("X-Backend") != want {
				return fmt.Errorf("request %d: body %q header %q; want %q", i, got, resp.Header.Get("X-Backend"), want)
			}
			return nil
		})
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Addr != want || r.Served != 3 || r.AfterSignal != 0 || r.SignalAt.IsZero() || r.ListenerClose.Before(r.SignalAt) {
		t.Errorf("report = %+v; want addr %s, served 3, after_signal 0, signal and close times set", r, want)
	}
	if _, err := http.Get(url); err == nil {
		t.Errorf("GET %s after SIGTERM succeeded; want connection refused", url)
	}
}

func TestUsage(t *testing.T) {
	t.Setenv("PORT", "")
	if err := run(nil, nil); err == nil || !strings.Contains(err.Error(), "no port") {
		t.Errorf("run without PORT = %v; want no port error", err)
	}
}
