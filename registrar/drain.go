package registrar

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/registry"
)

// waitDrained waits until every renderer whose prefixes cover key has
// acknowledged revision rev or later, at most timeout. A renderer
// acknowledges under its own prefix (the root without one), which need not
// be the registrar's: the acks are read under every registry.AckDirs(key) —
// the root and each ancestor of key — and coverage is decided by each ack's
// prefixes, so the wait is right whether renderer and registrar use one
// global prefix, per-resource prefixes, or none.
//
// Renderer acks live on the renderers' leases. A renderer that stops
// cleanly marks its ack Stopped before revoking the lease and is not waited
// for. A key that vanishes without that mark expired: the renderer may be
// alive and still routing to the instance, only cut off from etcd (an
// outage longer than its ack TTL), so it is waited for until it
// acknowledges again — whether its key vanished during the wait or earlier
// (lost: the roster's record). It logs what it waited for. The caller
// passes a ctx that outlives the shutdown signal (the drain is part of the
// shutdown) but ends early on a second signal or when the app exits.
func waitDrained(ctx context.Context, cli *clientv3.Client, key string, rev int64, timeout time.Duration, lost map[string]registry.Ack, log *slog.Logger) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dirs := registry.AckDirs(key)
	if lost == nil {
		lost = map[string]registry.Ack{}
	}
	for attempt := 0; ; attempt++ {
		pending, at, n, err := laggingAcks(ctx, cli, dirs, key, rev, lost)
		if err != nil {
			log.Warn("drain: cannot read renderer acks, stopping the app", "err", err, "took", time.Since(start))
			return
		}
		switch {
		case len(pending) == 0 && attempt == 0:
			log.Info("drain: no renderer to wait for", "key", key, "rev", rev, "renderers", n)
			return
		case attempt == 0:
			log.Info("drain: waiting for renderers", "key", key, "rev", rev, "renderers", slices.Sorted(maps.Keys(pending)))
		}
		if len(pending) > 0 {
			err = watchAcks(ctx, cli, dirs, key, rev, at+1, pending, lost, log)
		}
		if len(pending) == 0 {
			log.Info("drain: renderers acknowledged", "key", key, "rev", rev, "took", time.Since(start))
			return
		}
		if ctx.Err() != nil {
			left := slices.Sorted(maps.Keys(pending))
			log.Warn("drain: not acknowledged in time, stopping the app anyway", "key", key, "rev", rev, "pending", left, "took", time.Since(start))
			return
		}
		log.Debug("drain: watch ended, reading acks again", "err", err)
		if sleepCtx(ctx, backoff(attempt, time.Second)) != nil {
			continue // the next Get fails on ctx and reports
		}
	}
}

// laggingAcks reads the acks under dirs at one revision (the first Get's,
// returned as at) and returns the ack keys that cover key and are behind
// rev — the live ones, and the lost ones whose key is still gone — and how
// many acks it read.
func laggingAcks(ctx context.Context, cli *clientv3.Client, dirs []string, key string, rev int64, lost map[string]registry.Ack) (pending map[string]bool, at int64, n int, err error) {
	pending = map[string]bool{}
	live := map[string]bool{}
	for _, dir := range dirs {
		opts := []clientv3.OpOption{clientv3.WithPrefix()}
		if at > 0 {
			opts = append(opts, clientv3.WithRev(at))
		}
		resp, err := cli.Get(ctx, dir, opts...)
		if err != nil {
			return nil, 0, 0, fmt.Errorf("read %s: %w", dir, err)
		}
		if at == 0 {
			at = resp.Header.Revision
		}
		n += len(resp.Kvs)
		for _, kv := range resp.Kvs {
			live[string(kv.Key)] = true
			if ackLags(key, rev, kv.Value) {
				pending[string(kv.Key)] = true
			}
		}
	}
	for k, a := range lost {
		if !live[k] && a.CoversKey(key) && a.RevisionFor(key) < rev {
			pending[k] = true
		}
	}
	return pending, at, n, nil
}

// watchAcks removes ack keys from pending as they acknowledge rev or stop
// cleanly, watching every dir from fromRev. A key deleted without a clean
// stop stays pending and is added to lost. It returns when pending is empty, ctx ends, or a
// watch fails.
func watchAcks(ctx context.Context, cli *clientv3.Client, dirs []string, key string, rev, fromRev int64, pending map[string]bool, lost map[string]registry.Ack, log *slog.Logger) error {
	return watchDirs(ctx, cli, dirs, fromRev, func(wr clientv3.WatchResponse) bool {
		for _, ev := range wr.Events {
			k := string(ev.Kv.Key)
			switch {
			case !pending[k]:
			case ev.Type != mvccpb.DELETE:
				if !ackLags(key, rev, ev.Kv.Value) {
					delete(pending, k)
				}
			default:
				if prev, expired := expiredAck(ev); expired {
					lost[k] = prev
					log.Warn("drain: renderer's ack expired without a clean stop, still waiting for it", "key", k)
				} else {
					delete(pending, k)
				}
			}
		}
		return len(pending) == 0
	})
}

// ackLags reports whether the renderer ack value covers key and is behind
// rev. An ack that does not parse covers nothing; a stopped ack lags
// nothing (its renderer is gone).
func ackLags(key string, rev int64, value []byte) bool {
	var a registry.Ack
	if err := json.Unmarshal(value, &a); err != nil {
		return false
	}
	return !a.Stopped && a.CoversKey(key) && a.RevisionFor(key) < rev
}
