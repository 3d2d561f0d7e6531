package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"time"
)

// backends are in-process HTTP servers that answer every request with their
// own address (body and X-Backend header), like cmd/demo-backend, on one
// http.Server with a listener each.
type backends struct {
	srv *http.Server
	wg  sync.WaitGroup
}

func newBackends() *backends {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr := r.Context().Value(http.LocalAddrContextKey).(net.Addr).String()
		w.Header().Set("X-Backend", addr)
		io.WriteString(w, addr+"\n")
	})
	return &backends{srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}}
}

// add starts one more backend on a free loopback port.
func (b *backends) add() (netip.AddrPort, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("backend listen: %w", err)
	}
	b.wg.Go(func() {
		if err := b.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "backend:", err)
		}
	})
	return ln.Addr().(*net.TCPAddr).AddrPort(), nil
}

func (b *backends) addN(n int) ([]netip.AddrPort, error) {
	out := make([]netip.AddrPort, n)
	for i := range out {
		a, err := b.add()
		if err != nil {
			return nil, err
		}
		out[i] = a
	}
	return out, nil
}

func (b *backends) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.srv.Shutdown(ctx); err != nil {
		note("backends shutdown", errors.Join(err, b.srv.Close()))
	}
	b.wg.Wait()
}

// prober asks nginx which backend serves a service, one fresh connection
// per request (so every answer comes from nginx's current workers).
type prober struct {
	c   *http.Client
	url string
}

func newProber(n *nginx, svc string) *prober {
	return &prober{
		c:   &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
		url: n.URL("/" + svc + "/"),
	}
}

// get returns the backend that answered, or "" with the status for an
// nginx error page (502 when no instance is live).
func (p *prober) get() (string, error) {
	resp, err := p.c.Get(p.url)
	if err != nil {
		return "", err
	}
	if _, err := readBody(resp); err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return resp.Header.Get("X-Backend"), nil
}

// probeGap is the pause between probes: fine enough to time a change to a
// few milliseconds, light enough to leave the CPU to nginx and the renderer.
const probeGap = 2 * time.Millisecond

// routed waits until addr answers and returns when it first did.
func (p *prober) routed(ctx context.Context, addr string, timeout time.Duration) (time.Time, error) {
	var at time.Time
	err := poll(ctx, timeout, probeGap, "nginx routes to "+addr, func() error {
		got, err := p.get()
		if err != nil {
			return err
		}
		if got != addr {
			return fmt.Errorf("answered by %s", got)
		}
		at = time.Now()
		return nil
	})
	return at, err
}

// unrouted waits until addr no longer answers and returns the time of the
// first of window answers in a row from other backends (with round robin
// over fewer than window instances, addr would have answered one of them).
func (p *prober) unrouted(ctx context.Context, addr string, window int, timeout time.Duration) (time.Time, error) {
	var first time.Time
	n := 0
	err := poll(ctx, timeout, probeGap, "nginx stops routing to "+addr, func() error {
		got, err := p.get()
		now := time.Now()
		if err != nil || got == addr {
			n = 0
			return fmt.Errorf("answered by %q (%v)", got, err)
		}
		if n == 0 {
			first = now
		}
		if n++; n < window {
			return fmt.Errorf("%d answers without it", n)
		}
		return nil
	})
	return first, err
}
