package main

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/etcdclient"
	"github.com/rollcall/rollcall/registry"
)

// registrarTTL is the registrar's default lease TTL.
const registrarTTL = 10

// etcdLoad puts opt.registrars registrars' leases on one etcd, each with
// its own client as a registrar has: a lease with the registrar's default
// TTL, its instance key and port claim on it, and clientv3's keep-alive.
// Over opt.etcdWindow it counts keep-alive answers, etcd's CPU, and times
// single keep-alives of one more lease.
func etcdLoad(ctx context.Context, opt *options, t *table) error {
	e, _, done, err := etcdAlone(ctx, opt, "etcdload")
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var answers atomic.Int64
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	clients := make([]*clientv3.Client, opt.registrars)
	defer func() {
		for _, c := range clients {
			if c != nil {
				note("etcd client", etcdclient.Close(c))
			}
		}
	}()
	for i := range clients {
		if clients[i], err = newClient(e.endpoint); err != nil {
			return err
		}
		ch, err := register(ctx, clients[i], i)
		if err != nil {
			return fmt.Errorf("registrar %d: %w", i, err)
		}
		wg.Go(func() {
			for range ch {
				answers.Add(1)
			}
		})
	}
	// One keep-alive period (TTL/3) for the streams to settle.
	if err := sleep(ctx, registrarTTL*time.Second/3+time.Second); err != nil {
		return err
	}
	return measureLoad(ctx, opt, t, e, &answers)
}

// measureLoad measures over opt.etcdWindow, while answers counts the
// registrars' keep-alive answers: their rate, etcd's CPU and RSS, and the
// round trip of one more lease's keep-alives.
func measureLoad(ctx context.Context, opt *options, t *table, e *etcdProc, answers *atomic.Int64) error {
	cpu, err := startCPU(e.Pid())
	if err != nil {
		return err
	}
	n0, t0 := answers.Load(), time.Now()
	rtts, err := keepAliveRTTs(ctx, e.kv, opt.etcdWindow)
	if err != nil {
		return err
	}
	n1, secs := answers.Load(), time.Since(t0).Seconds()
	share, err := cpu.share()
	if err != nil {
		return err
	}
	name := fmt.Sprintf("etcd, %d registrars' leases (TTL %ds): ", opt.registrars, registrarTTL)
	t.add(name+"keep-alive requests", rate, float64(n1-n0)/secs)
	t.add(name+"etcd CPU", pct, share)
	rss, err := rssBytes(e.Pid(), "VmRSS")
	if err != nil {
		return err
	}
	t.add(name+"etcd RSS", mb, rss)
	t.dur(name+"keep-alive round trip p50", percentile(rtts, 50))
	t.dur(name+"keep-alive round trip p99", percentile(rtts, 99))
	return nil
}

// register does what one registrar does against etcd: grant, put the port
// claim and the instance key on the lease, keep it alive.
func register(ctx context.Context, c *clientv3.Client, i int) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	l, err := c.Grant(rctx, registrarTTL)
	if err != nil {
		return nil, err
	}
	a := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 20000)
	app := fmt.Sprintf("load%04d", i)
	_, err = c.Txn(rctx).Then(
		clientv3.OpPut(registry.PortClaimKey("", a.Addr(), a.Port()), registry.Service(app, benchEnv), clientv3.WithLease(l.ID)),
		clientv3.OpPut(registry.Key("", app, benchEnv, a), registry.Value(a), clientv3.WithLease(l.ID)),
	).Commit()
	if err != nil {
		return nil, err
	}
	return c.KeepAlive(ctx, l.ID)
}

// keepAliveRTTs times a single keep-alive of one more lease every 100 ms
// for window.
func keepAliveRTTs(ctx context.Context, c *clientv3.Client, window time.Duration) ([]time.Duration, error) {
	l, err := c.Grant(ctx, registrarTTL)
	if err != nil {
		return nil, err
	}
	var rtts []time.Duration
	end := time.Now().Add(window)
	for time.Now().Before(end) {
		t0 := time.Now()
		kctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := c.KeepAliveOnce(kctx, l.ID)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("keep-alive: %w", err)
		}
		rtts = append(rtts, time.Since(t0))
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
	}
	return rtts, nil
}
