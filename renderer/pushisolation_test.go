package renderer

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/waitfor"
)

// peersTmpl is templates/peers.tmpl's peer set, one line per service.
const peersTmpl = `{{range services}}{{.Name}}{{range .Instances}} {{.}}{{end}}
{{end}}`

// hungLua is nginx's Lua endpoint (fakeLua) that logs each request's start
// to iso's starts and, while iso's works file is missing, accepts a
// request and never answers (until the client gives up).
func (iso *isolation) hungLua(t *testing.T) (*fakeLua, string) {
	t.Helper()
	f := &fakeLua{}
	release := make(chan struct{})
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if err := appendLine(iso.starts, fmt.Sprintf("0 %.6f\n", float64(time.Now().UnixNano())/1e9)); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(iso.works); err != nil {
			select {
			case <-req.Context().Done():
			case <-release:
			}
			return
		}
		f.ServeHTTP(w, req)
	}))
	t.Cleanup(s.Close)
	t.Cleanup(func() { close(release) }) // before Close: no handler left hanging
	return f, s.URL
}

func appendLine(path, line string) error {
	fd, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = fd.WriteString(line)
	return errors.Join(err, fd.Close())
}

// withPush makes a a resource that pushes to url (no check, no reload).
func (iso *isolation) withPush(url string) {
	h := iso.h
	h.cfg.Push = PushOn
	iso.destA = filepath.Join(h.out, "a.peers")
	h.write("templates/a.tmpl", peersTmpl)
	h.write("conf.d/a.toml", fmt.Sprintf("[template]\nsrc = \"a.tmpl\"\ndest = %q\nkeys = [\"/a_prod\"]\npush = %q\n", iso.destA, url))
}

// startPush applies every resource once (a's endpoint answers) and returns
// how many requests a's endpoint had.
func (iso *isolation) startPush(t *testing.T) int {
	t.Helper()
	h := iso.h
	h.put(key("a_prod", "10.0.0.1", 80), "10.0.0.1:80")
	h.put(key("b_prod", "10.0.0.1", 80), "10.0.0.1:80")
	h.start()
	h.waitFile(iso.destB, "b_prod: 10.0.0.1:80\n")
	waitfor.Cond(t, 10*time.Second, "first apply", func() error {
		if got := readFile(t, iso.destA); !strings.HasSuffix(got, "\na_prod 10.0.0.1:80\n") {
			return fmt.Errorf("a = %q", got)
		}
		if code, body := h.readyz(); code != http.StatusOK {
			return fmt.Errorf("/readyz %d %q", code, body)
		}
		return nil
	})
	iso.reloads = h.reloadCount()
	starts, _ := iso.runs(t)
	return len(starts)
}

// TestHungPushIsolated: resource a pushes its peers to nginx's Lua
// endpoint, which accepts a's push and never answers until
// --command-timeout; meanwhile resource b's change is installed, reloaded
// and acknowledged for b's prefix within 1s (before: b waited 3s, for a's
// push on the loop). a's push is given up at the timeout and counted, a
// is reported failing in metrics and /readyz, retried apart with backoff,
// and applied (nginx holds its peers) once the endpoint answers.
func TestHungPushIsolated(t *testing.T) {
	t.Parallel()
	const timeout = 3 * time.Second
	iso := newIsolation(t, timeout)
	f, url := iso.hungLua(t)
	iso.withPush(url)
	iso.hangA(t, iso.startPush(t))
	iso.changeB(t)
	iso.waitFailing(t, "push")
	iso.waitRetried(t, timeout)
	iso.editB(t) // a configuration reload while a's retry hangs: a's push lands on the state loaded then
	if err := os.WriteFile(iso.works, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	iso.waitAcked(t)
	if got := readFile(t, iso.destA); !strings.HasSuffix(got, "\na_prod 10.0.0.1:80 10.0.0.2:80\n") {
		t.Errorf("a = %q after its retry applied", got)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.held < iso.revA {
		t.Errorf("nginx holds version %d once a applied; want >= %d", f.held, iso.revA)
	}
}

// waitAcked waits for a's change to be acknowledged and /readyz ready.
func (iso *isolation) waitAcked(t *testing.T) {
	t.Helper()
	h := iso.h
	waitfor.Cond(t, 15*time.Second, "a retried and acknowledged", func() error {
		a, err := h.ack()
		if err != nil || a.Revision < iso.revA {
			return fmt.Errorf("ack %+v, %v", a, err)
		}
		if code, body := h.readyz(); code != http.StatusOK {
			return fmt.Errorf("/readyz %d %q", code, body)
		}
		return nil
	})
}

// TestHungPushShutdown: the renderer stopped while a push hangs returns at
// once (not at --command-timeout); the push's goroutine ends before Run
// returns (the package's leak check would see it otherwise).
func TestHungPushShutdown(t *testing.T) {
	t.Parallel()
	iso := newIsolation(t, time.Minute)
	_, url := iso.hungLua(t)
	iso.withPush(url)
	iso.hangA(t, iso.startPush(t))
	h := iso.h
	start := time.Now()
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not return within 3s while a push hung")
	}
	t.Logf("Run returned %v after cancel", time.Since(start).Round(time.Millisecond))
}

// TestHungHAProxySocketIsolated: resource a sets HAProxy's servers through
// its runtime API, whose socket accepts and never answers; meanwhile b's
// change is applied and acknowledged for b's prefix within 1s, and a's
// push is given up at --command-timeout, counted and reported failing.
func TestHungHAProxySocketIsolated(t *testing.T) {
	t.Parallel()
	iso := newIsolation(t, 3*time.Second)
	h := iso.h
	sock, accepted := hungSocket(t)
	iso.destA = filepath.Join(h.out, "a.peers")
	h.write("templates/a.tmpl", peersTmpl)
	h.write("templates/haproxy.cfg.tmpl", "# never rendered: the socket never answers\n")
	url := fmt.Sprintf("haproxy://%s?config=%s&template=haproxy.cfg.tmpl", sock, filepath.Join(h.out, "haproxy.cfg"))
	h.write("conf.d/a.toml", fmt.Sprintf("[template]\nsrc = \"a.tmpl\"\ndest = %q\nkeys = [\"/a_prod\"]\npush = %q\n", iso.destA, url))
	h.put(key("b_prod", "10.0.0.1", 80), "10.0.0.1:80")
	h.start()
	h.waitFile(iso.destB, "b_prod: 10.0.0.1:80\n")
	iso.reloads = h.reloadCount()
	before := accepted()
	iso.revA = h.put(key("a_prod", "10.0.0.2", 80), "10.0.0.2:80")
	waitfor.Cond(t, 10*time.Second, "a's push hangs", func() error {
		if n := accepted(); n <= before {
			return fmt.Errorf("%d connections to a's socket", n)
		}
		return nil
	})
	iso.changeB(t)
	iso.waitFailing(t, "push")
}

// hungSocket listens on a unix socket, accepts and never answers; the
// connections close when the test ends. accepted counts them.
func hungSocket(t *testing.T) (sock string, accepted func() int) {
	t.Helper()
	dir, err := os.MkdirTemp("", "hap") // short: a socket path has ~100 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock = filepath.Join(dir, "admin.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	})
	return sock, func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(conns)
	}
}
