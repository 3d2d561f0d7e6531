package rolling_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/waitfor"
)

// load keeps clients concurrent GETs going against url until stopped, its
// time bound passes, or maxRequests have been sent.
type load struct {
	url         string
	clients     int
	pace        time.Duration // pause between one client's requests
	maxRequests int64
	maxTime     time.Duration

	mu       sync.Mutex
	sent     int64
	ok       int64
	retried  int64
	conns    int64 // connections opened
	closed   int64 // connections nginx closed (a read saw EOF or a reset)
	byAddr   map[string]int64
	lastSent map[string]time.Time // per backend: start of the latest request it answered
	failures []string             // first failures, for the report
	failed   int64

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (l *load) start(ctx context.Context) {
	l.byAddr = map[string]int64{}
	l.lastSent = map[string]time.Time{}
	ctx, l.cancel = context.WithTimeout(ctx, l.maxTime)
	tr := &http.Transport{MaxIdleConnsPerHost: l.clients, MaxConnsPerHost: l.clients, DialContext: l.dial}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for range l.clients {
		l.wg.Go(func() {
			defer tr.CloseIdleConnections()
			for ctx.Err() == nil && l.take() {
				l.one(ctx, client)
				select {
				case <-ctx.Done():
				case <-time.After(l.pace):
				}
			}
		})
	}
}

// take counts one request against maxRequests.
func (l *load) take() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sent >= l.maxRequests {
		return false
	}
	l.sent++
	return true
}

// one sends a request, retrying once when nginx closed a reused keep-alive
// connection under it (it closes idle client connections on reload).
func (l *load) one(ctx context.Context, client *http.Client) {
	started := time.Now()
	addr, reused, err := get(ctx, client, l.url)
	if err != nil && reused && ctx.Err() == nil && closedByPeer(err) {
		l.mu.Lock()
		l.retried++
		l.mu.Unlock()
		addr, reused, err = get(ctx, client, l.url)
	}

	if ctx.Err() != nil && err != nil {
		return // stopped mid-request: not a failure of the system under test
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.failed++
		if len(l.failures) < 20 {
			l.failures = append(l.failures, fmt.Sprintf("%s: %v", started.Format("15:04:05.000"), err))
		}
		return
	}
	l.ok++
	l.byAddr[addr]++
	if started.After(l.lastSent[addr]) {
		l.lastSent[addr] = started
	}
}

// dial opens a connection that counts itself, and counts when nginx closes
// it: net/http notices a closed idle connection and dials again without an
// error, so only the connection sees it.
func (l *load) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.conns++
	l.mu.Unlock()
	return &countedConn{Conn: c, l: l}, nil
}

// countedConn counts, once, a read that finds the connection closed by the
// peer; closing it ourselves makes reads fail with net.ErrClosed instead.
type countedConn struct {
	net.Conn
	l    *load
	once sync.Once
}

func (c *countedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		c.once.Do(func() {
			c.l.mu.Lock()
			c.l.closed++
			c.l.mu.Unlock()
		})
	}
	return n, err
}

type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string {
	body := e.body
	if i := strings.Index(body, "<title>"); i >= 0 {
		body, _, _ = strings.Cut(body[i+len("<title>"):], "</title>")
	}
	return fmt.Sprintf("status %d: %.80q", e.code, body)
}

func isStatus(err error) bool {
	var se *statusError
	return errors.As(err, &se)
}

// closedByPeer reports whether err is the peer closing the connection (EOF,
// reset, broken pipe, or net/http's "server closed idle connection"): what a
// client sees on a kept-alive connection that nginx closed on reload. A
// status, a timeout or anything else is not retried.
func closedByPeer(err error) bool {
	var ne net.Error
	if isStatus(err) || errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		strings.Contains(err.Error(), "server closed idle connection")
}

// get does one GET and returns the answering backend (X-Backend) and whether
// the connection was a reused one.
func get(ctx context.Context, client *http.Client, url string) (addr string, reused bool, err error) {
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, url, nil)
	if err != nil {
		return "", false, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", reused, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", reused, err
	}
	if resp.StatusCode/100 != 2 {
		return "", reused, &statusError{resp.StatusCode, strings.TrimSpace(string(b))}
	}
	addr = resp.Header.Get("X-Backend")
	if addr == "" || strings.TrimSpace(string(b)) != addr {
		return "", reused, fmt.Errorf("answer %q with X-Backend %q: not a demo-backend", b, addr)
	}
	return addr, reused, nil
}

// stop ends the load and waits for every client.
func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
}

// served is how many requests addr answered so far.
func (l *load) served(addr string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byAddr[addr]
}

// stats are the load's totals.
type stats struct {
	sent, ok, failed, retried int64
	conns, closed             int64    // connections opened, and closed by nginx
	failures                  []string // the first few
}

// summary reads the totals.
func (l *load) summary() stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return stats{l.sent, l.ok, l.failed, l.retried, l.conns, l.closed, append([]string(nil), l.failures...)}
}

// keepOn waits until n more requests have been answered, so that a late
// route to a gone backend would show up as a failure.
func (l *load) keepOn(t *testing.T, n int64, what string) {
	t.Helper()
	from := l.summary().ok
	waitfor.Cond(t, 10*time.Second, "load continues "+what, func() error {
		if ok := l.summary().ok; ok < from+n {
			return fmt.Errorf("%d requests answered since", ok-from)
		}
		return nil
	})
}

// finish stops the load and logs its totals and first failures.
func (l *load) finish(t *testing.T) stats {
	t.Helper()
	l.stop()
	st := l.summary()
	t.Logf("load: %d sent, %d ok, %d failed, %d retried on a reused connection, %d connections opened by %d clients, %d closed by nginx; spread%s",
		st.sent, st.ok, st.failed, st.retried, st.conns, l.clients, st.closed, l.spread())
	for _, f := range st.failures {
		t.Logf("failure: %s", f)
	}
	return st
}

// spread formats the per-backend counts, sorted by address.
func (l *load) spread() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	addrs := make([]string, 0, len(l.byAddr))
	for a := range l.byAddr {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	var b strings.Builder
	for _, a := range addrs {
		fmt.Fprintf(&b, " %s=%d", a, l.byAddr[a])
	}
	return b.String()
}

func TestClosedByPeer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"eof", &url.Error{Op: "Get", URL: "http://x/", Err: io.EOF}, true},
		{"unexpected eof", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		{"reset", &url.Error{Op: "Get", URL: "http://x/", Err: &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}}, true},
		{"broken pipe", &net.OpError{Op: "write", Err: os.NewSyscallError("write", syscall.EPIPE)}, true},
		{"idle closed", errors.New("http: server closed idle connection"), true},
		{"status", &statusError{502, "Bad Gateway"}, false},
		{"timeout", &url.Error{Op: "Get", URL: "http://x/", Err: timeoutError{}}, false},
		{"refused", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, false},
		{"not a backend", errors.New(`answer "x" with X-Backend "": not a demo-backend`), false},
	} {
		if got := closedByPeer(tc.err); got != tc.want {
			t.Errorf("%s: closedByPeer(%v) = %v; want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
