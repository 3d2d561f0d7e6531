package nginxreload_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/nginxtest"
	"github.com/rollcall/rollcall/internal/waitfor"
	"github.com/rollcall/rollcall/nginxreload"
)

// hello is a location whose answer shows which config nginx runs.
func hello(text string) nginxtest.Config {
	return nginxtest.Config{Server: fmt.Sprintf("location = /hello { return 200 %q; }", text)}
}

func get(t *testing.T, s *nginxtest.Server) string {
	t.Helper()
	resp, err := http.Get(s.URL("/hello"))
	if err != nil {
		t.Fatalf("GET /hello: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// startBroken starts nginx serving "old" and writes a config that passes
// nginx -t but cannot be applied: it listens on a port a test listener holds.
func startBroken(t *testing.T) *nginxtest.Server {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	s := nginxtest.Start(t, hello("old"))
	bad := hello("new")
	bad.HTTP = fmt.Sprintf("server { listen %s; }", l.Addr())
	if err := s.WriteConf(bad); err != nil {
		t.Fatal(err)
	}
	return s
}

func config(s *nginxtest.Server, signal bool) nginxreload.Config {
	c := nginxreload.Config{
		Nginx:    s.Bin,
		Args:     s.Args(),
		PIDFile:  filepath.Join(s.Prefix, "nginx.pid"),
		ErrorLog: filepath.Join(s.Prefix, "error.log"),
		Timeout:  5 * time.Second,
	}
	if signal {
		c.Nginx, c.Args = "", nil
	}
	return c
}

func TestReloadApplied(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nginx")
	}
	t.Parallel()
	for _, signal := range []bool{false, true} {
		t.Run(fmt.Sprintf("signal=%v", signal), func(t *testing.T) {
			t.Parallel()
			s := nginxtest.Start(t, hello("one"))
			if err := s.WriteConf(hello("two")); err != nil {
				t.Fatal(err)
			}
			res, err := nginxreload.Reload(context.Background(), config(s, signal))
			if err != nil {
				t.Fatalf("Reload: %v", err)
			}
			master, _ := s.MasterPID()
			if res.Master != master || len(res.Old) == 0 || len(res.New) == 0 {
				t.Fatalf("Reload = %+v; want master %d, old and new workers", res, master)
			}
			// A new worker generation runs the new config: no waiting needed.
			if got := get(t, s); got != "two" {
				t.Fatalf("after Reload GET /hello = %q; want two", got)
			}
			t.Logf("reload confirmed in %v", res.Took)
		})
	}
}

func TestReloadKeptOldConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nginx")
	}
	t.Parallel()
	tests := []struct {
		name      string
		signal    bool
		errorLog  bool
		wantEmerg bool
	}{
		{"nginx -s reload with error log", false, true, true},
		{"SIGHUP with error log", true, true, true},
		{"nginx -s reload without error log", false, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := startBroken(t)
			c := config(s, tc.signal)
			if !tc.errorLog {
				c.ErrorLog = ""
				c.Timeout = time.Second
			}
			start := time.Now()
			_, err := nginxreload.Reload(context.Background(), c)
			var kept *nginxreload.KeptOldError
			if !errors.As(err, &kept) {
				t.Fatalf("Reload = %v; want *KeptOldError", err)
			}
			if !strings.Contains(err.Error(), "nginx kept the old config") {
				t.Errorf("error %q does not say nginx kept the old config", err)
			}
			quoted := strings.Contains(err.Error(), "[emerg]") && strings.Contains(err.Error(), "Address already in use")
			if quoted != tc.wantEmerg {
				t.Errorf("error %q quotes [emerg] bind failure: %v; want %v", err, quoted, tc.wantEmerg)
			}
			if tc.wantEmerg && time.Since(start) > 3*time.Second {
				t.Errorf("failure took %v; want the [emerg] line to end the wait early", time.Since(start))
			}
			if got := get(t, s); got != "old" {
				t.Fatalf("GET /hello = %q; want old (nginx keeps serving the old config)", got)
			}
		})
	}
}

// TestPlainReloadLies documents why the package exists: nginx -s reload
// exits 0 for a config the master then refuses.
func TestPlainReloadLies(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nginx")
	}
	t.Parallel()
	s := startBroken(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := s.Run(ctx, "-t", "-q"); err != nil {
		t.Fatalf("nginx -t rejected the config (%v: %s); the test needs one that passes it", err, out)
	}
	if err := s.Reload(ctx); err != nil {
		t.Fatalf("nginx -s reload = %v; want exit 0 (the lie this package catches)", err)
	}
	_, err := nginxreload.Reload(ctx, config(s, false))
	var kept *nginxreload.KeptOldError
	if !errors.As(err, &kept) {
		t.Fatalf("Reload after the lie = %v; want *KeptOldError", err)
	}
}

func TestReloadNotSent(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nginx")
	}
	t.Parallel()
	s := nginxtest.Start(t, hello("old"))
	stopped := nginxtest.New(t)
	if err := stopped.WriteConf(hello("x")); err != nil {
		t.Fatal(err)
	}
	syntax := hello("new")
	syntax.Server += "\nlocation = /broken { return 200 "
	if err := s.WriteConf(syntax); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		c    nginxreload.Config
		want string
	}{
		{"syntax error", config(s, false), "unexpected \"}\""},
		{"no pid file", config(stopped, false), "read pid file"},
		{"missing binary", func() nginxreload.Config {
			c := config(s, false)
			c.Nginx = filepath.Join(t.TempDir(), "nginx")
			return c
		}(), "no such file"},
	}
	for _, tc := range tests {
		_, err := nginxreload.Reload(context.Background(), tc.c)
		var kept *nginxreload.KeptOldError
		if err == nil || errors.As(err, &kept) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Reload = %v; want a send error containing %q", tc.name, err, tc.want)
		}
	}
	if got := get(t, s); got != "old" {
		t.Fatalf("GET /hello = %q; want old", got)
	}
}

// TestReloadWaitsForOldWorkers: a retired worker still answers, with the old
// config, a request on a connection it accepted before the reload; Reload
// does not report success while such a worker lives, up to its settle bound.
func TestReloadWaitsForOldWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nginx")
	}
	t.Parallel()
	s := nginxtest.Start(t, hello("one"))
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Half a request: the old worker has accepted the connection and reads it.
	if _, err := io.WriteString(c, "GET /hello HTTP/1.1\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteConf(hello("two")); err != nil {
		t.Fatal(err)
	}
	res, err := nginxreload.Reload(context.Background(), config(s, false))
	if err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if res.Took < time.Second {
		t.Errorf("Reload returned after %v while an old worker still served a connection; want >= 1s", res.Took)
	}
	if _, err := io.WriteString(c, "Host: x\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(b), "one") {
		t.Errorf("held connection answered %q; want the old config's \"one\" (else the test shows nothing)", b)
	}
	if got := get(t, s); got != "two" {
		t.Errorf("new connection GET /hello = %q; want two", got)
	}
}

// TestReloadQuitsOldWorkersEarly: Reload tells the old workers to quit as
// soon as the new ones run instead of leaving them to the master, which
// waits 100 ms after starting the new workers; the old config (a removed
// backend) stops answering that much sooner. Requests sent all the while
// all succeed, and the master neither respawns a worker nor logs an alert.
// Both ways of sending the reload: SIGHUP (the shipped reload_cmd) and
// `nginx -s reload` (a confd user's, which the renderer confirms with the
// same Wait).
func TestReloadQuitsOldWorkersEarly(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nginx")
	}
	t.Parallel()
	for _, signal := range []bool{true, false} {
		t.Run(fmt.Sprintf("signal=%v", signal), func(t *testing.T) {
			t.Parallel()
			quitsOldWorkersEarly(t, signal)
		})
	}
}

func quitsOldWorkersEarly(t *testing.T, signal bool) {
	cfg := func(n int) nginxtest.Config {
		c := hello(fmt.Sprint(n))
		c.Workers = 2
		return c
	}
	s := nginxtest.Start(t, cfg(0))
	load := startLoad(t, s)
	fastest := time.Hour
	for n := 1; n <= 5; n++ {
		if err := s.WriteConf(cfg(n)); err != nil {
			t.Fatal(err)
		}
		res, err := nginxreload.Reload(context.Background(), config(s, signal))
		if err != nil {
			t.Fatalf("Reload %d: %v", n, err)
		}
		if res.QuitErr != nil || len(res.Quit) != len(res.Old) {
			t.Fatalf("Reload %d quit %v of the old workers %v (%v); want all", n, res.Quit, res.Old, res.QuitErr)
		}
		if got := get(t, s); got != fmt.Sprint(n) {
			t.Fatalf("after Reload %d GET /hello = %q", n, got)
		}
		fastest = min(fastest, res.Took)
	}
	// The master alone retires the old workers 100 ms after the new ones
	// start, so a reload waiting for that never takes less.
	if fastest >= 100*time.Millisecond {
		t.Errorf("fastest of 5 reloads took %v until the old workers were gone; want < 100ms", fastest)
	}
	if sent, failed := load.stop(); failed != nil || sent < 10 {
		t.Errorf("%d requests during the reloads; failures: %v", sent, failed)
	}
	master, err := s.MasterPID()
	if err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 5*time.Second, "two workers", func() error {
		kids, err := nginxreload.Children(master)
		if err == nil && len(kids) != 2 {
			err = fmt.Errorf("master %d has children %v", master, kids)
		}
		return err
	})
	b, err := os.ReadFile(filepath.Join(s.Prefix, "error.log"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if strings.Contains(line, "[alert]") || strings.Contains(line, "[emerg]") || strings.Contains(line, "[crit]") {
			t.Errorf("error log: %s", line)
		}
	}
}

// load sends GET /hello, one connection each, until stopped.
type load struct {
	cancel context.CancelFunc
	done   chan struct{}
	sent   int
	failed []error
}

func startLoad(t *testing.T, s *nginxtest.Server) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel, done: make(chan struct{})}
	t.Cleanup(func() { l.stop() })
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	go func() {
		defer close(l.done)
		for ctx.Err() == nil {
			resp, err := c.Get(s.URL("/hello"))
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %s", resp.Status)
				}
			}
			l.sent++
			if err != nil && len(l.failed) < 5 {
				l.failed = append(l.failed, err)
			}
		}
	}()
	return l
}

func (l *load) stop() (sent int, failed []error) {
	l.cancel()
	<-l.done
	return l.sent, l.failed
}
