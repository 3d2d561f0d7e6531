package nginxpush

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeNginx answers like the Lua endpoint, with scripted statuses first.
type fakeNginx struct {
	mu     sync.Mutex
	script []int // statuses for the next POSTs; then the real behaviour
	held   int64
	lose   bool // forget the version after the next POST (a restart)
	posts  int
	msg    string
}

func (f *fakeNginx) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Method == http.MethodGet {
		io.WriteString(w, "version "+strconv.FormatInt(f.held, 10)+"\n")
		return
	}
	f.posts++
	if len(f.script) > 0 {
		code := f.script[0]
		f.script = f.script[1:]
		w.WriteHeader(code)
		io.WriteString(w, f.msg)
		return
	}
	b, _ := io.ReadAll(r.Body)
	v, base, _, err := decode(b)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, err.Error())
		return
	}
	if base >= 0 && v > f.held && base != f.held {
		w.WriteHeader(http.StatusPreconditionFailed)
		io.WriteString(w, "holding version "+strconv.FormatInt(f.held, 10))
		return
	}
	if v > f.held {
		f.held = v
	}
	if f.lose {
		f.lose, f.held = false, 0
	}
	io.WriteString(w, "version "+strconv.FormatInt(f.held, 10)+"\n")
}

func TestPush(t *testing.T) {
	one := PeerSet{Version: 4, Services: map[string][]netip.AddrPort{"a_b": {netip.MustParseAddrPort("10.0.0.1:80")}}}
	for _, tc := range []struct {
		name      string
		fake      *fakeNginx
		wantPosts int
		wantErr   string // "" = confirmed
	}{
		{"applied", &fakeNginx{}, 1, ""},
		{"stale is acknowledged", &fakeNginx{held: 9}, 1, ""},
		{"busy then applied", &fakeNginx{script: []int{409, 409}}, 3, ""},
		{"reloading then applied", &fakeNginx{script: []int{502, 503}}, 3, ""},
		{"lost between post and get", &fakeNginx{lose: true}, 2, ""},
		{"refused", &fakeNginx{script: []int{400}, msg: "refused, nothing applied: line 2: invalid address"}, 1, "nginx refused peers (400): refused, nothing applied"},
		{"dict full", &fakeNginx{script: []int{507}, msg: "no memory"}, 1, "(507): no memory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.fake
			s := httptest.NewServer(f)
			defer s.Close()
			c := &Client{URL: s.URL, MaxBackoff: time.Millisecond}
			err := c.Push(t.Context(), one)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Push() = %v; want %q", err, tc.wantErr)
			}
			if f.posts != tc.wantPosts {
				t.Errorf("posts = %d; want %d", f.posts, tc.wantPosts)
			}
		})
	}
}

func TestPushDelta(t *testing.T) {
	d := Delta{Base: 4, Version: 6, Services: map[string][]netip.AddrPort{"a_b": nil}}
	for _, tc := range []struct {
		name      string
		fake      *fakeNginx
		wantPosts int
		wantErr   string // "" = confirmed
	}{
		{"applied", &fakeNginx{held: 4}, 1, ""},
		{"stale is acknowledged", &fakeNginx{held: 6}, 1, ""},
		{"busy then applied", &fakeNginx{held: 4, script: []int{409}}, 2, ""},
		{"lost dict: refused at once", &fakeNginx{held: 0}, 1, "refused a delta from version 4 (412): holding version 0"},
		{"gap: refused at once", &fakeNginx{held: 5}, 1, "(412): holding version 5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.fake
			s := httptest.NewServer(f)
			defer s.Close()
			c := &Client{URL: s.URL, MaxBackoff: time.Millisecond}
			err := c.PushDelta(t.Context(), d)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("PushDelta() = %v; want %q", err, tc.wantErr)
			}
			var be *BaseError
			if tc.wantErr != "" && (!errors.As(err, &be) || be.Base != 4) {
				t.Errorf("PushDelta() = %#v; want a *BaseError with base 4", err)
			}
			if f.posts != tc.wantPosts {
				t.Errorf("posts = %d; want %d", f.posts, tc.wantPosts)
			}
		})
	}
}

// TestPushDownUntilDeadline: nothing listening is retried until ctx ends,
// and the error says both why it stopped and what failed last.
func TestPushDownUntilDeadline(t *testing.T) {
	s := httptest.NewServer(http.NotFoundHandler())
	url := s.URL
	s.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	c := &Client{URL: url, MaxBackoff: 20 * time.Millisecond}
	err := c.Push(ctx, PeerSet{Version: 1})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Push() to a closed port = %v; want deadline exceeded after connection refused", err)
	}
}
