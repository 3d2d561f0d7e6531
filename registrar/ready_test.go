package registrar

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

func TestCheckProbe(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.WriteHeader(http.StatusNoContent)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	up := netip.MustParseAddrPort(srv.Listener.Addr().String())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := netip.MustParseAddrPort(l.Addr().String())
	l.Close()

	tests := []struct {
		spec    string
		addr    netip.AddrPort
		wantErr bool
	}{
		{"tcp", up, false},
		{"tcp", down, true},
		{"http://{{.IP}}:{{.Port}}/ok", up, false},
		{"http://{{.Addr}}/ok", up, false},
		{"http://{{.IP}}:{{.Port}}/fail", up, true},
		{"http://{{.IP}}:{{.Port}}/ok", down, true},
	}
	for _, tc := range tests {
		cs, err := parseCheck(tc.spec)
		if err != nil {
			t.Fatalf("parseCheck(%q) = %v", tc.spec, err)
		}
		chk, err := cs.probe(tc.addr)
		if err != nil {
			t.Fatalf("probe(%q, %v) = %v", tc.spec, tc.addr, err)
		}
		if err := chk(context.Background()); (err != nil) != tc.wantErr {
			t.Errorf("check %q on %v = %v; want err %v", tc.spec, tc.addr, err, tc.wantErr)
		}
	}
	cs, _ := parseCheck("none")
	if chk, err := cs.probe(up); chk != nil || err != nil {
		t.Errorf("probe(none) = %v, %v; want nil check", chk != nil, err)
	}
}

func TestCheckExpandIPv6(t *testing.T) {
	t.Parallel()
	cs, err := parseCheck("http://{{.Addr}}/health?ip={{.IP}}&port={{.Port}}")
	if err != nil {
		t.Fatal(err)
	}
	got, err := cs.expand(netip.MustParseAddrPort("[::1]:8080"))
	if want := "http://[::1]:8080/health?ip=::1&port=8080"; got != want || err != nil {
		t.Fatalf("expand = %q, %v; want %q", got, err, want)
	}
}

// TestWatchHealth runs a scripted check on the fake clock: ready after two
// failures, unhealthy only after unhealthyAfter failures in a row, healthy
// again on the next pass.
func TestWatchHealth(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		script := []bool{false, false, true, true, false, false, true, false, false, false, false, true}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		i := 0
		chk := func(ctx context.Context) error {
			if i >= len(script) {
				cancel()
				return ctx.Err()
			}
			ok := script[i]
			i++
			if !ok {
				return errors.New("down")
			}
			return nil
		}
		var got []bool
		watchHealth(ctx, chk, time.Second, func(h bool, err error) { got = append(got, h) })
		if want := []bool{true, false, true}; !slices.Equal(got, want) {
			t.Fatalf("transitions = %v; want %v", got, want)
		}
	})
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	limit := 500 * time.Millisecond
	for attempt := range 20 {
		want := min(100*time.Millisecond<<attempt, limit)
		for range 50 {
			if d := backoff(attempt, limit); d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %v; want in [%v, %v]", attempt, d, want/2, want)
			}
		}
	}
	for _, tc := range []struct{ ttl, want time.Duration }{
		{2 * time.Second, 500 * time.Millisecond},
		{time.Second, 250 * time.Millisecond},
		{10 * time.Second, 2500 * time.Millisecond},
		{time.Minute, 5 * time.Second},
	} {
		if got := retryCap(tc.ttl); got != tc.want {
			t.Errorf("retryCap(%v) = %v; want %v", tc.ttl, got, tc.want)
		}
	}
}
