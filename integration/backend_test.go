package integration_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/waitfor"
)

// backend is an HTTP server answering every request with its name.
type backend struct {
	name string
	addr netip.AddrPort
	hits atomic.Int64
}

func newBackend(t *testing.T, name string) *backend {
	t.Helper()
	b := &backend{name: name}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		b.hits.Add(1)
		w.Write([]byte(name))
	}))
	t.Cleanup(srv.Close)
	addr, err := netip.ParseAddrPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b.addr = addr
	return b
}

// served sends n requests through nginx to /<svc>/ and counts the answers by
// backend name; any non-200 answer is an error.
func (r *rig) served(svc string, n int) (map[string]int, error) {
	got := map[string]int{}
	for range n {
		resp, err := r.http.Get(r.nginx.URL("/" + svc + "/"))
		if err != nil {
			return got, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return got, err
		}
		if resp.StatusCode != http.StatusOK {
			return got, fmt.Errorf("GET /%s/: %s after %v", svc, resp.Status, got)
		}
		got[string(b)]++
	}
	return got, nil
}

// waitServed waits until requests through nginx to /<svc>/ reach exactly
// the named backends (each at least once, nothing else).
func (r *rig) waitServed(timeout time.Duration, svc string, want ...string) {
	r.t.Helper()
	waitfor.Cond(r.t, timeout, fmt.Sprintf("/%s/ not served by exactly %v", svc, want), func() error {
		return r.servedBy(svc, want...)
	})
}

// serve registers a new backend per name under svc, then waits until nginx
// routes to exactly those and the renderer is ready.
func (r *rig) serve(timeout time.Duration, svc string, names ...string) []*backend {
	r.t.Helper()
	var bs []*backend
	for _, name := range names {
		b := newBackend(r.t, name)
		r.register(svc, b)
		bs = append(bs, b)
	}
	r.waitServed(timeout, svc, names...)
	r.waitReady(timeout)
	return bs
}

// servedBy checks once that 10 requests per backend reach exactly want.
func (r *rig) servedBy(svc string, want ...string) error {
	if r.renderer != nil {
		if err := r.renderer.Exited(); err != nil {
			return err
		}
	}
	got, err := r.served(svc, 10*len(want))
	if err != nil {
		return err
	}
	names := make([]string, 0, len(got))
	for name := range got {
		names = append(names, name)
	}
	slices.Sort(names)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(names, want) {
		return fmt.Errorf("got %v", got)
	}
	return nil
}
