package renderer

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeLua answers like lua/rollcall/peers.lua's endpoint: it holds a
// version, applies a full state or a delta on top of the version it holds
// (412 otherwise), and counts what it was sent.
type fakeLua struct {
	mu            sync.Mutex
	held          int64
	fulls, deltas int
	lastBody      string
	refusedDeltas int
	bytesIn       int
	confirmed     time.Time // the last GET: a push is confirmed by it
}

func (f *fakeLua) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Method == http.MethodGet {
		f.confirmed = time.Now()
		io.WriteString(w, "version "+strconv.FormatInt(f.held, 10)+"\n")
		return
	}
	b, _ := io.ReadAll(r.Body)
	f.bytesIn += len(b)
	f.lastBody = string(b)
	head, _, _ := strings.Cut(string(b), "\n")
	vs, from, delta := strings.Cut(strings.TrimPrefix(head, "version "), " from ")
	v, _ := strconv.ParseInt(vs, 10, 64)
	base, _ := strconv.ParseInt(from, 10, 64)
	if delta {
		f.deltas++
		if v > f.held && base != f.held {
			f.refusedDeltas++
			w.WriteHeader(http.StatusPreconditionFailed)
			io.WriteString(w, "holding version "+strconv.FormatInt(f.held, 10)+"\n")
			return
		}
	} else {
		f.fulls++
	}
	f.held = max(f.held, v)
	io.WriteString(w, "version "+strconv.FormatInt(f.held, 10)+"\n")
}

func (f *fakeLua) lose() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.held = 0
}

// pushConfdir is benchConfdir's confdir for all apps in one resource (its
// upstreams.tmpl, kept when upstreams is set: a change renders it too, and
// it stays as it is) plus the shipped peers.tmpl as a resource that pushes
// to url. It returns the confdir, the peers file and apps x 10 instances.
func pushConfdir(tb testing.TB, apps int, url string, upstreams bool) (string, string, map[string]string) {
	tb.Helper()
	dir, kvs := benchConfdir(tb, apps, false, "", "")
	if !upstreams {
		if err := os.Remove(filepath.Join(dir, "conf.d", "upstreams.toml")); err != nil {
			tb.Fatal(err)
		}
	}
	b, err := os.ReadFile(filepath.Join("..", "templates", "peers.tmpl"))
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "templates", "peers.tmpl"), b, 0o644); err != nil {
		tb.Fatal(err)
	}
	dest := filepath.Join(tb.TempDir(), "peers.txt")
	toml := fmt.Sprintf("[template]\nsrc = \"peers.tmpl\"\ndest = %q\nkeys = [\"/\"]\npush = %q\n", dest, url)
	if err := os.WriteFile(filepath.Join(dir, "conf.d", "peers.toml"), []byte(toml), 0o644); err != nil {
		tb.Fatal(err)
	}
	return dir, dest, kvs
}

func newPushRenderer(tb testing.TB, apps int, upstreams bool) (*Renderer, *fakeLua, string, map[string]string) {
	tb.Helper()
	f := &fakeLua{}
	s := httptest.NewServer(f)
	tb.Cleanup(s.Close)
	dir, dest, kvs := pushConfdir(tb, apps, s.URL, upstreams)
	r := newTestRenderer(dir)
	r.push.enabled = true
	r.store.Replace(kvs, 1, r.prefixes())
	r.applyDue(context.Background(), time.Now())
	if !r.sched.Idle() {
		tb.Fatal("first push failed")
	}
	return r, f, dest, kvs
}

// BenchmarkPushChange: the renderer's share of one instance change at
// 10,000 instances over 1,000 apps on the push path, as the shipped pair
// (conf.d/peers.toml.example, upstreams-lua.toml.example) has it: render
// the peer set, find what changed, install the peers file, push and
// confirm (to a fake nginx that answers at once), then render the
// upstreams (unchanged; upstreams.tmpl, as costly as upstreams-lua.tmpl). push-ms/op is the loop's start to the confirmed
// push, the renderer's share in make bench.
func BenchmarkPushChange(b *testing.B) {
	r, f, _, _ := newPushRenderer(b, 1000, true)
	ctx := context.Background()
	b.ReportAllocs()
	n := 0
	var toPush time.Duration
	for b.Loop() {
		n++
		toggle(r.store, n)
		start := time.Now()
		r.applyDue(ctx, time.Now())
		if !r.sched.Idle() {
			b.Fatal("change not applied")
		}
		toPush += f.confirmed.Sub(start)
	}
	b.ReportMetric(float64(toPush.Microseconds())/1000/float64(n), "push-ms/op")
}
