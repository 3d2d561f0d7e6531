package renderer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

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
	iso.pushes = true
	iso.destA = filepath.Join(h.out, "a.peers")
	h.write("templates/a.tmpl", peersTmpl)
	h.write("conf.d/a.toml", fmt.Sprintf("[template]\nsrc = \"a.tmpl\"\ndest = %q\nkeys = [\"/a_prod\"]\npush = %q\n", iso.destA, url))
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
	iso.hangA(t, iso.start(t))
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

// TestHungPushShutdown: the renderer stopped while a push hangs returns at
// once (not at --command-timeout); the push's goroutine ends before Run
// returns (the package's leak check would see it otherwise).
func TestHungPushShutdown(t *testing.T) {
	t.Parallel()
	iso := newIsolation(t, time.Minute)
	_, url := iso.hungLua(t)
	iso.withPush(url)
	iso.hangA(t, iso.start(t))
	iso.stopHung(t, "a push")
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

// gatedLua is nginx's Lua endpoint (fakeLua) whose pushes wait while hold
// is set; it records the versions pushed and how many requests were in
// flight at most.
type gatedLua struct {
	lua                   fakeLua
	mu                    sync.Mutex
	hold                  chan struct{}
	inflight, maxInflight int
	pushed                []int64
}

func (g *gatedLua) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	g.mu.Lock()
	g.inflight++
	g.maxInflight = max(g.maxInflight, g.inflight)
	hold := g.hold
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.inflight--
		g.mu.Unlock()
	}()
	if req.Method == http.MethodPost {
		b, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		v, _ := strconv.ParseInt(strings.Fields(string(b))[1], 10, 64)
		g.mu.Lock()
		g.pushed = append(g.pushed, v)
		g.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-req.Context().Done():
				return
			}
		}
		req.Body = io.NopCloser(bytes.NewReader(b))
	}
	g.lua.ServeHTTP(w, req)
}

func (g *gatedLua) state() (inflight, maxInflight int, pushed []int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inflight, g.maxInflight, slices.Clone(g.pushed)
}

// TestPushesInOrderCoalesced: while a's push is out (its endpoint slow),
// a's later changes wait for it and go in one push of the newest
// snapshot, as a delta from the confirmed push; a's pushes never overlap;
// b's change in the meantime is applied and acknowledged for b's prefix.
func TestPushesInOrderCoalesced(t *testing.T) {
	t.Parallel()
	iso := newIsolation(t, 10*time.Second)
	h := iso.h
	g := &gatedLua{}
	s := httptest.NewServer(g)
	t.Cleanup(s.Close)
	iso.withPush(s.URL)
	iso.start(t)
	_, _, pushed := g.state()
	start := len(pushed)
	release := make(chan struct{})
	g.mu.Lock()
	g.hold = release
	g.mu.Unlock()
	first := h.put(key("a_prod", "10.0.0.2", 80), "10.0.0.2:80")
	waitfor.Cond(t, 10*time.Second, "a's push out", func() error {
		if n, _, _ := g.state(); n != 1 {
			return fmt.Errorf("%d requests in flight", n)
		}
		return nil
	})
	for i := 3; i <= 5; i++ {
		h.put(key("a_prod", fmt.Sprintf("10.0.0.%d", i), 80), "x")
	}
	iso.revA = h.put(key("a_prod", "10.0.0.6", 80), "10.0.0.6:80")
	iso.changeB(t) // the loop took a's changes too
	close(release)
	iso.waitAcked(t)
	_, most, pushed := g.state()
	if p := pushed[start:]; len(p) != 2 || p[0] != first || p[1] < iso.revA {
		t.Errorf("pushed versions %v after the start; want %d (the one out), then one at %d or later", p, first, iso.revA)
	}
	if most != 1 {
		t.Errorf("%d requests at once; want pushes one at a time", most)
	}
	g.lua.mu.Lock()
	deltas, refused := g.lua.deltas, g.lua.refusedDeltas
	g.lua.mu.Unlock()
	if deltas != 2 || refused != 0 {
		t.Errorf("%d deltas (%d refused); want both changes as deltas from the confirmed push", deltas, refused)
	}
	if got := readFile(t, iso.destA); !strings.HasSuffix(got, "\na_prod 10.0.0.1:80 10.0.0.2:80 10.0.0.6:80\n") {
		t.Errorf("a = %q", got)
	}
}

// TestPushBeforeReload: in a batch that changes a pushed peer set (a) and
// a resource that reloads (b), b's reload waits for a's push, so an app
// that appears has its peers before its upstream; a push that hangs holds
// it back pushOrderWait at most.
func TestPushBeforeReload(t *testing.T) {
	t.Parallel()
	iso := newIsolation(t, 10*time.Second)
	h := iso.h
	g := &gatedLua{}
	s := httptest.NewServer(g)
	t.Cleanup(s.Close)
	iso.withPush(s.URL)
	iso.start(t)
	for i, hold := range []bool{false, true} { // released at once, held beyond pushOrderWait
		release := make(chan struct{})
		g.mu.Lock()
		g.hold = release
		g.mu.Unlock()
		addr := fmt.Sprintf("10.0.1.1:%d", 80+i)
		start := time.Now()
		resp, err := h.cli.Txn(context.Background()).Then(clientv3.OpPut(key("a_prod", "10.0.1.1", 80+i), addr),
			clientv3.OpPut(key("b_prod", "10.0.1.1", 80+i), addr)).Commit()
		if err != nil {
			t.Fatal(err)
		}
		iso.revA = resp.Header.Revision
		waitfor.Cond(t, 10*time.Second, "a's push out", func() error {
			if n, _, _ := g.state(); n != 1 {
				return fmt.Errorf("%d requests in flight", n)
			}
			return nil
		})
		if n := h.reloadCount(); n != iso.reloads {
			t.Fatalf("b reloaded while a's push of the same batch was out")
		}
		if !hold {
			close(release)
		}
		waitfor.Cond(t, 3*time.Second, "b reloaded", func() error {
			if n := h.reloadCount(); n != iso.reloads+1 {
				return fmt.Errorf("%d reloads", n-iso.reloads)
			}
			return nil
		})
		took := time.Since(start)
		iso.reloads++
		if hold {
			close(release)
			if took < pushOrderWait {
				t.Errorf("b reloaded %v after the change while a's push was held; want >= %v", took, pushOrderWait)
			}
		}
		t.Logf("b reloaded %v after the change (a's push held: %v)", took.Round(time.Millisecond), hold)
		iso.waitAcked(t)
	}
}
