package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestLoad: the load generator keeps one connection per worker open (a
// keep-alive server sees exactly conns connections), counts every 200, and
// counts as failures the answers that are not 200 or close the connection.
func TestLoad(t *testing.T) {
	for _, tc := range []struct {
		name       string
		handler    http.HandlerFunc
		wantOK     bool // answers counted as ok
		wantFailed bool
		keepAlive  bool
	}{
		{"keep-alive 200", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) }, true, false, true},
		{"500", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }, false, true, false},
		{"closed by the server", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			w.Write([]byte("ok\n"))
		}, false, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			conns := map[string]bool{}
			srv := httptest.NewUnstartedServer(tc.handler)
			srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
				if s == http.StateNew {
					mu.Lock()
					conns[c.RemoteAddr().String()] = true
					mu.Unlock()
				}
			}
			srv.Start()
			defer srv.Close()
			res := load(context.Background(), strings.TrimPrefix(srv.URL, "http://"), "/x/", 4, 200*time.Millisecond)
			if (res.ok > 0) != tc.wantOK || (res.failed > 0) != tc.wantFailed {
				t.Fatalf("ok %d, failed %d; want ok %v, failed %v", res.ok, res.failed, tc.wantOK, tc.wantFailed)
			}
			mu.Lock()
			defer mu.Unlock()
			if tc.keepAlive && len(conns) != 4 {
				t.Errorf("%d connections for 4 workers; want 4 (keep-alive)", len(conns))
			}
			if tc.keepAlive && res.ok < 8 {
				t.Errorf("only %d answers in 200ms", res.ok)
			}
		})
	}
}

func TestStaticUpstream(t *testing.T) {
	got := staticUpstream([]netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:81"), netip.MustParseAddrPort("[::1]:82")})
	want := "upstream static_rps {\n    server 127.0.0.1:81;\n    server [::1]:82;\n    keepalive 16;\n}\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if staticUpstream(nil) != "" {
		t.Error("no peers: want no upstream")
	}
}
