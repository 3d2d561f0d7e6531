package registrar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// keeper owns the instance's lease: it grants it, puts the port claim (and
// the key while the app is healthy), keeps it alive, and grants and puts
// again whenever the lease is lost or the key changes behind its back.
//
// Fields below "owned by run" are touched only by the goroutine in run, and
// by revoke after it.
type keeper struct {
	conn       *conn
	log        *slog.Logger
	ttl        time.Duration
	opTimeout  time.Duration // one etcd request
	retryCap   time.Duration // backoff ceiling
	key, value string        // instance key and ip:port
	claimKey   string        // _ports/<ip>/<port>
	claimValue string        // <app>_<env>

	want atomic.Bool   // app ready and healthy: the key should exist
	poke chan struct{} // cap 1: want changed

	// owned by run
	lease      clientv3.LeaseID // 0: none
	stale      clientv3.LeaseID // a lost lease that may still exist server-side
	registered bool             // key put on lease
	putRev     int64            // revision of the last put
	down       bool             // etcd unreachable, warned once
}

// keeperConfig is what a keeper keeps registered, and how.
type keeperConfig struct {
	Key, Value           string           // instance key and ip:port
	ClaimKey, ClaimValue string           // _ports/<ip>/<port> and <app>_<env>
	Lease                clientv3.LeaseID // the pick's lease, holding the claim; 0: none yet
	TTL, OpTimeout       time.Duration    // lease TTL; one etcd request
}

// newKeeper returns a keeper for kc that takes over kc.Lease.
func newKeeper(c *conn, kc keeperConfig, log *slog.Logger) *keeper {
	return &keeper{
		conn: c, log: log, ttl: kc.TTL, opTimeout: kc.OpTimeout,
		retryCap: retryCap(kc.TTL),
		key:      kc.Key, value: kc.Value,
		claimKey: kc.ClaimKey, claimValue: kc.ClaimValue,
		lease: kc.Lease,
		poke:  make(chan struct{}, 1),
	}
}

// retryCap keeps every retry well inside a TTL, so a registration lost to an
// outage is back within 2×TTL of etcd answering again.
func retryCap(ttl time.Duration) time.Duration {
	return min(max(ttl/4, 250*time.Millisecond), 5*time.Second)
}

// backoff is exponential from 100ms, capped, with jitter in [d/2, d].
func backoff(attempt int, limit time.Duration) time.Duration {
	d := min(100*time.Millisecond<<min(attempt, 16), limit)
	return d/2 + rand.N(d/2+1)
}

// setWant records whether the app is healthy; the keeper puts or removes the
// key accordingly. Safe from any goroutine.
func (k *keeper) setWant(v bool) {
	if k.want.Swap(v) != v {
		select {
		case k.poke <- struct{}{}:
		default:
		}
	}
}

func (k *keeper) grant(ctx context.Context, cli *clientv3.Client) error {
	id, err := grantLease(ctx, cli, k.ttl, k.opTimeout, k.log)
	if err != nil {
		return err
	}
	k.lease, k.registered = id, false
	return nil
}

// grantLease grants a lease of ttl, waiting at most opTimeout.
func grantLease(ctx context.Context, cli *clientv3.Client, ttl, opTimeout time.Duration, log *slog.Logger) (clientv3.LeaseID, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := cli.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return 0, fmt.Errorf("grant lease: %w", err)
	}
	log.Debug("lease granted", "lease", fmt.Sprintf("%x", resp.ID), "ttl", resp.TTL)
	return resp.ID, nil
}

// run keeps the registration until ctx ends; the caller then calls revoke.
func (k *keeper) run(ctx context.Context) {
	attempt := 0
	for ctx.Err() == nil {
		if err := k.register(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			k.setDown(err)
			if sleepCtx(ctx, backoff(attempt, k.retryCap)) != nil {
				return
			}
			attempt++
			continue
		}
		k.setUp()
		held := time.Now()
		err := k.hold(ctx)
		if err == nil || ctx.Err() != nil {
			attempt = 0 // health changed or shutting down
			continue
		}
		k.log.Warn("registration lost, registering again", "key", k.key, "err", err)
		if time.Since(held) > k.ttl {
			attempt = 0
		}
		if sleepCtx(ctx, backoff(attempt, k.retryCap)) != nil {
			return
		}
		attempt++
	}
}

func (k *keeper) setDown(err error) {
	if !k.down {
		k.log.Warn("cannot register, app keeps running, retrying", "key", k.key, "err", k.conn.explain(err))
		k.down = true
		return
	}
	k.log.Debug("still cannot register", "err", err)
}

func (k *keeper) setUp() {
	if k.down {
		k.log.Info("etcd answers again", "key", k.key)
		k.down = false
	}
}

// register makes etcd match the wanted state on a live lease: the claim
// always, the key while the app is healthy (removed only if still ours).
func (k *keeper) register(ctx context.Context) error {
	cli, err := k.conn.get()
	if err != nil {
		return err
	}
	if k.lease == 0 {
		if err := k.grant(ctx, cli); err != nil {
			return err
		}
	}
	tctx, cancel := context.WithTimeout(ctx, k.opTimeout)
	defer cancel()
	want := k.want.Load()
	claim := clientv3.OpPut(k.claimKey, k.claimValue, clientv3.WithLease(k.lease), clientv3.WithPrevKV())
	txn := cli.Txn(tctx)
	if want {
		txn = txn.Then(claim, clientv3.OpPut(k.key, k.value, clientv3.WithLease(k.lease)))
	} else {
		txn = txn.If(clientv3.Compare(clientv3.LeaseValue(k.key), "=", k.lease)).
			Then(claim, clientv3.OpDelete(k.key)).
			Else(claim)
	}
	resp, err := txn.Commit()
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		k.dropLease()
		return fmt.Errorf("register %s: lease gone: %w", k.key, err)
	}
	if err != nil {
		return fmt.Errorf("register %s: %w", k.key, err)
	}
	if prev := resp.Responses[0].GetResponsePut().GetPrevKv(); prev != nil &&
		prev.Lease != int64(k.lease) && prev.Lease != int64(k.stale) && prev.Lease != 0 {
		k.log.Warn("took over a port claim held by another lease", "key", k.claimKey,
			"lease", fmt.Sprintf("%x", prev.Lease), "owner", string(prev.Value))
	}
	k.putRev = resp.Header.Revision
	switch {
	case want && !k.registered:
		k.log.Info("registered", "key", k.key, "value", k.value, "lease", fmt.Sprintf("%x", k.lease), "rev", k.putRev)
	case !want && k.registered:
		k.log.Info("deregistered while unhealthy", "key", k.key, "rev", k.putRev)
	}
	k.registered = want
	if k.stale != 0 {
		// Keys moved to the new lease; the old one must not outlive them.
		// If this fails, it expires within a TTL by itself.
		if _, err := cli.Revoke(tctx, k.stale); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			k.log.Warn("revoke the lost lease: it expires by itself", "lease", fmt.Sprintf("%x", k.stale), "err", err)
		}
		k.stale = 0
	}
	return nil
}

func (k *keeper) dropLease() {
	k.stale, k.lease, k.registered = k.lease, 0, false
}

// hold keeps the lease alive and watches the key. It returns nil when ctx
// ends or the wanted state changed, an error when the registration is lost.
func (k *keeper) hold(ctx context.Context) error {
	cli, err := k.conn.get()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	ka, err := cli.KeepAlive(ctx, k.lease)
	if err != nil {
		cancel()
		k.dropLease()
		return fmt.Errorf("keep lease alive: %w", err)
	}
	var opened chan clientv3.WatchChan // nil: nothing to watch
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	if k.registered {
		// clientv3's Watch returns only once its stream is open, i.e. once
		// etcd answers: opened in the background, so a lease lost meanwhile
		// is still noticed. It reads no field of k (those are run's).
		opened = make(chan clientv3.WatchChan, 1)
		key, from := k.key, k.putRev+1
		wg.Go(func() { opened <- cli.Watch(clientv3.WithRequireLeader(ctx), key, clientv3.WithRev(from)) })
	}
	var wch clientv3.WatchChan
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-k.poke:
			if k.want.Load() != k.registered {
				return nil
			}
		case r, ok := <-ka:
			if !ok || r.TTL <= 0 {
				lease := k.lease
				k.dropLease()
				return fmt.Errorf("lease %x lost: expired, revoked or etcd unreachable for a TTL", lease)
			}
		case wch = <-opened:
			opened = nil
		case wr, ok := <-wch:
			if ctx.Err() != nil {
				return nil
			}
			if err := k.checkWatch(wr, ok); err != nil {
				return err
			}
		}
	}
}

// checkWatch says how the registration is lost, if the watch response
// (ok: not closed) shows it.
func (k *keeper) checkWatch(wr clientv3.WatchResponse, ok bool) error {
	if !ok || wr.Canceled {
		return fmt.Errorf("watch %s ended: %v", k.key, wr.Err())
	}
	for _, ev := range wr.Events {
		if ev.Type == mvccpb.DELETE {
			return fmt.Errorf("key %s deleted at rev %d", k.key, ev.Kv.ModRevision)
		}
		if ev.Kv.Lease != int64(k.lease) || string(ev.Kv.Value) != k.value {
			return fmt.Errorf("key %s overwritten at rev %d", k.key, ev.Kv.ModRevision)
		}
	}
	return nil
}

// revoke removes key and claim at once by revoking the lease and returns the
// revision of the removal (0: nothing was registered). It runs after run has
// returned, on its own deadline (one request's) even if ctx is cancelled.
func (k *keeper) revoke(ctx context.Context) (int64, error) {
	if k.lease == 0 && k.stale != 0 {
		// Lost and not yet replaced: the server may still hold the key on it.
		k.lease, k.registered = k.stale, true
	}
	k.stale = 0
	if k.lease == 0 {
		return 0, nil
	}
	cli, err := k.conn.get()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), k.opTimeout)
	defer cancel()
	resp, err := cli.Revoke(ctx, k.lease)
	lease := k.lease
	registered := k.registered
	k.lease, k.registered = 0, false
	if errors.Is(err, rpctypes.ErrLeaseNotFound) && registered {
		// Already gone with everything on it; any revision from now covers it.
		g, gerr := cli.Get(ctx, k.key, clientv3.WithCountOnly())
		if gerr != nil {
			return 0, fmt.Errorf("revoke lease %x: %w", lease, gerr)
		}
		return g.Header.Revision, nil
	}
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("revoke lease %x: %w", lease, err)
	}
	k.log.Info("deregistered", "key", k.key, "lease", fmt.Sprintf("%x", lease), "rev", resp.Header.Revision, "registered", registered)
	if !registered {
		return 0, nil
	}
	return resp.Header.Revision, nil
}
