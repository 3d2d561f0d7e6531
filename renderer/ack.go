package renderer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/registry"
)

// acker publishes registry.Ack under _renderers/<id> on its own lease, kept
// alive while the renderer runs and revoked when it stops, so a registrar
// draining an instance never waits for a dead gateway. Publish never blocks
// the apply loop: the latest ack is written by Run.
type acker struct {
	cli *clientv3.Client
	key string
	ttl time.Duration
	log *slog.Logger

	mu     sync.Mutex
	latest *registry.Ack
	kick   chan struct{} // cap 1
}

func newAcker(cli *clientv3.Client, key string, ttl time.Duration, log *slog.Logger) *acker {
	return &acker{cli: cli, key: key, ttl: ttl, log: log, kick: make(chan struct{}, 1)}
}

// Publish queues ack to be written; a later ack replaces an unwritten one.
func (a *acker) Publish(ack registry.Ack) {
	a.mu.Lock()
	a.latest = &ack
	a.mu.Unlock()
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func (a *acker) current() *registry.Ack {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.latest
}

// Run keeps the lease and writes acks until ctx is done, then revokes the
// lease. A lost lease is granted again and the latest ack rewritten.
func (a *acker) Run(ctx context.Context) {
	for attempt := 0; ; attempt++ {
		err := a.session(ctx)
		if ctx.Err() != nil {
			return
		}
		a.log.Warn("ack lease lost, granting again", "err", err)
		// A grant waits for the connection by itself: a short pause is
		// enough, and a long one would hold the ack back after an outage.
		if sleepCtx(ctx, backoff(attempt, 200*time.Millisecond, time.Second)) != nil {
			return
		}
	}
}

// session runs one lease: grant, keep alive, put acks; revoke on return.
func (a *acker) session(ctx context.Context) error {
	gctx, cancel := context.WithTimeout(ctx, a.ttl)
	lease, err := a.cli.Grant(gctx, int64(a.ttl/time.Second))
	cancel()
	if err != nil {
		return fmt.Errorf("grant: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if ctx.Err() != nil {
			a.stop(rctx, lease.ID)
		}
		if _, err := a.cli.Revoke(rctx, lease.ID); err != nil && ctx.Err() != nil {
			a.log.Warn("revoke ack lease", "lease", lease.ID, "err", err)
		}
	}()
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	ka, err := a.cli.KeepAlive(kctx, lease.ID)
	if err != nil {
		return fmt.Errorf("keep alive: %w", err)
	}
	a.log.Debug("ack lease granted", "lease", lease.ID)
	if err := a.put(ctx, lease.ID); err != nil {
		return err
	}
	return a.publish(ctx, lease.ID, ka)
}

// publish writes each queued ack on lease until ctx is done or the lease's
// keep-alive channel closes (the lease is gone).
func (a *acker) publish(ctx context.Context, lease clientv3.LeaseID, ka <-chan *clientv3.LeaseKeepAliveResponse) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-ka:
			if !ok {
				return errors.New("keep-alive channel closed")
			}
		case <-a.kick:
			if err := a.put(ctx, lease); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				// The lease may still be alive: retry soon, on it.
				a.log.Warn("publish ack", "err", err)
				select {
				case a.kick <- struct{}{}:
				default:
				}
				if sleepCtx(ctx, 500*time.Millisecond) != nil {
					return nil
				}
			}
		}
	}
}

// put writes the latest ack, if any, on lease.
func (a *acker) put(ctx context.Context, lease clientv3.LeaseID) error {
	ack := a.current()
	if ack == nil {
		return nil
	}
	b, err := json.Marshal(ack)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, a.ttl)
	defer cancel()
	if _, err := a.cli.Put(pctx, a.key, string(b), clientv3.WithLease(lease)); err != nil {
		return fmt.Errorf("put %s: %w", a.key, err)
	}
	a.log.Debug("ack published", "key", a.key, "rev", ack.Revision)
	return nil
}

// stop marks the ack stopped before the lease is revoked, so registrars
// tell this clean stop from a lease that expired while the renderer was cut
// off from etcd (registry.Ack.Stopped).
func (a *acker) stop(ctx context.Context, lease clientv3.LeaseID) {
	ack := a.current()
	if ack == nil {
		return
	}
	last := *ack
	last.Stopped, last.Updated = true, time.Now()
	b, err := json.Marshal(last)
	if err != nil {
		a.log.Warn("mark ack stopped", "err", err)
		return
	}
	if _, err := a.cli.Put(ctx, a.key, string(b), clientv3.WithLease(lease)); err != nil {
		a.log.Warn("mark ack stopped", "key", a.key, "err", err)
	}
}
