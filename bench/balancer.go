package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rollcall/rollcall/registry"
)

// The balancer's cost is measured with rpsConns keep-alive connections over
// rpsPeers backends.
const (
	rpsConns = 32
	rpsPeers = 4
	rpsApp   = "rps"
)

// balancerCost compares requests/s through one nginx to the same backends
// behind a static upstream (staticSvc, written in nginx.conf) and behind
// the Lua balancer (upstream rps_bench, rendered from upstreams-lua.tmpl,
// its peers pushed), in opt.runs rounds of window each,
// alternating which goes first, so both see the same machine state.
func balancerCost(ctx context.Context, opt *options, t *table, window time.Duration) error {
	pw, err := newPushWorld(ctx, opt, "push-rps", rpsPeers)
	if err != nil {
		return err
	}
	defer pw.close()
	luaSvc := registry.Service(rpsApp, benchEnv)
	if err := rpsSetup(ctx, pw, luaSvc); err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", pw.ngx.Port)
	paths := [2]string{"/" + staticSvc + "/", "/" + luaSvc + "/"}
	for _, p := range paths { // warm up: connections, caches, the Lua code
		load(ctx, addr, p, rpsConns, time.Second)
	}
	r0, err := pw.nginxReloads()
	if err != nil {
		return err
	}
	var sums [2]float64
	var failed int64
	for r := range opt.runs {
		for k := range 2 {
			i := (r + k) % 2 // static first in even rounds, Lua first in odd ones
			res := load(ctx, addr, paths[i], rpsConns, window)
			if err := ctx.Err(); err != nil {
				return err
			}
			name := map[int]string{0: "static upstream", 1: "Lua balancer, pushed peers"}[i]
			t.add(fmt.Sprintf("%sbalancer cost: requests/s, %s (%d keep-alive connections × %v)",
				pushName, name, rpsConns, window), rate, res.rate())
			sums[i] += res.rate()
			failed += res.failed
		}
	}
	r1, err := pw.nginxReloads()
	if err != nil {
		return err
	}
	t.add(fmt.Sprintf("%sbalancer cost: Lua balancer / static upstream (%d rounds each)", pushName, opt.runs), pct,
		100*sums[1]/sums[0]).with("≥ 90 % (issue 9)", "")
	t.add(pushName+"balancer cost: failed requests and socket errors", count, float64(failed)).with("0", "")
	t.add(pushName+"balancer cost: nginx reloads during the load", count, r1-r0).with("0", "")
	return nil
}

// rpsSetup starts the renderer, registers the static upstream's backends
// as luaSvc and checks that both upstreams route to all of them.
func rpsSetup(ctx context.Context, pw *pushWorld, luaSvc string) error {
	if _, err := pw.startRenderer(ctx, 2*time.Minute); err != nil {
		return err
	}
	var rev int64
	var err error
	for _, a := range pw.static {
		if rev, err = pw.put(ctx, registry.Key("", rpsApp, benchEnv, a), registry.Value(a)); err != nil {
			return err
		}
	}
	if _, err := pw.acks.waitAck(ctx, rev, time.Minute); err != nil {
		return err
	}
	for _, svc := range []string{staticSvc, luaSvc} {
		if err := answeredBy(pw.prober(svc), pw.static); err != nil {
			return fmt.Errorf("%s: %w", svc, err)
		}
	}
	return nil
}

// loadResult is one window of load: answers 200, failures (a socket
// error, a connection nginx closed, another status) and how long it took.
type loadResult struct {
	ok, failed int64
	took       time.Duration
}

func (r loadResult) rate() float64 { return float64(r.ok) / r.took.Seconds() }

// load sends GET path to addr over conns keep-alive connections, one
// request at a time on each, for d: a closed loop, so the rate is what
// nginx and the backends sustain on this machine.
func load(ctx context.Context, addr, path string, conns int, d time.Duration) loadResult {
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: bench\r\n\r\n")
	start := time.Now()
	deadline := start.Add(d)
	for range conns {
		wg.Go(func() { loadConn(ctx, addr, req, deadline, &ok, &failed) })
	}
	wg.Wait()
	return loadResult{ok: ok.Load(), failed: failed.Load(), took: time.Since(start)}
}

// loadConn is one connection's loop; it reconnects after a failure.
func loadConn(ctx context.Context, addr string, req []byte, deadline time.Time, ok, failed *atomic.Int64) {
	var conn net.Conn
	var br *bufio.Reader
	defer func() {
		if conn != nil {
			conn.Close() // the load is over: nothing to report
		}
	}()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if conn == nil {
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				failed.Add(1)
				if sleep(ctx, 10*time.Millisecond) != nil {
					return
				}
				continue
			}
			if err := c.SetDeadline(deadline.Add(5 * time.Second)); err != nil {
				failed.Add(1)
				c.Close() // the failure is counted; the close adds nothing
				continue
			}
			conn, br = c, bufio.NewReader(c)
		}
		if err := roundTrip(conn, br, req); err != nil {
			failed.Add(1)
			conn.Close()
			conn = nil
			continue
		}
		ok.Add(1)
	}
}

var errClosed = errors.New("nginx closes the connection")

// roundTrip sends req and reads the whole answer; an answer other than
// 200, or one that closes the connection, is an error.
func roundTrip(conn net.Conn, br *bufio.Reader, req []byte) error {
	if _, err := conn.Write(req); err != nil {
		return err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	err = errors.Join(err, resp.Body.Close())
	switch {
	case err != nil:
		return err
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("status %d", resp.StatusCode)
	case resp.Close:
		return errClosed
	}
	return nil
}
