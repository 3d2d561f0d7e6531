package registrar

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/registry"
)

// waitDrained waits until every live renderer whose prefixes cover key has
// acknowledged revision rev or later (or its ack key is gone), at most
// timeout. A renderer acknowledges under its own prefix (the root without
// one), which need not be the registrar's: the acks are read under every
// registry.AckDirs(key) — the root and each ancestor of key — and coverage
// is decided by each ack's prefixes, so the wait is right whether renderer
// and registrar use one global prefix, per-resource prefixes, or none.
// Renderer acks live on the renderers' leases, so a dead renderer's key
// vanishes and is not waited for. It logs what it waited for. The caller
// passes a ctx that outlives the shutdown signal (the drain is part of the
// shutdown) but ends early on a second signal or when the app exits.
func waitDrained(ctx context.Context, cli *clientv3.Client, key string, rev int64, timeout time.Duration, log *slog.Logger) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dirs := registry.AckDirs(key)
	for attempt := 0; ; attempt++ {
		pending, at, n, err := laggingAcks(ctx, cli, dirs, key, rev)
		if err != nil {
			log.Warn("drain: cannot read renderer acks, stopping the app", "err", err, "took", time.Since(start))
			return
		}
		if len(pending) == 0 && attempt == 0 {
			log.Info("drain: no renderer to wait for", "key", key, "rev", rev, "renderers", n)
			return
		}
		if attempt == 0 {
			log.Info("drain: waiting for renderers", "key", key, "rev", rev, "renderers", slices.Sorted(maps.Keys(pending)))
		}
		err = watchAcks(ctx, cli, dirs, key, rev, at+1, pending)
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
// rev, and how many acks it read.
func laggingAcks(ctx context.Context, cli *clientv3.Client, dirs []string, key string, rev int64) (pending map[string]bool, at int64, n int, err error) {
	pending = map[string]bool{}
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
			if ackLags(key, rev, kv) {
				pending[string(kv.Key)] = true
			}
		}
	}
	return pending, at, n, nil
}

// watchAcks removes ack keys from pending as they acknowledge rev or go
// away, watching every dir from fromRev. It returns when pending is empty,
// ctx ends, or a watch fails.
func watchAcks(ctx context.Context, cli *clientv3.Client, dirs []string, key string, rev, fromRev int64, pending map[string]bool) error {
	var wg sync.WaitGroup
	defer wg.Wait() // runs after cancel: the watches close and the forwarders return
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan clientv3.WatchResponse)
	for _, dir := range dirs {
		wch := cli.Watch(ctx, dir, clientv3.WithPrefix(), clientv3.WithRev(fromRev))
		wg.Go(func() {
			for wr := range wch {
				select {
				case events <- wr:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	for len(pending) > 0 {
		var wr clientv3.WatchResponse
		select {
		case wr = <-events:
		case <-ctx.Done():
			return ctx.Err()
		}
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			if ev.Type == mvccpb.DELETE || !ackLags(key, rev, ev.Kv) {
				delete(pending, string(ev.Kv.Key))
			}
		}
	}
	return nil
}

// ackLags reports whether the renderer ack in kv covers key and is behind
// rev. An ack that does not parse covers nothing.
func ackLags(key string, rev int64, kv *mvccpb.KeyValue) bool {
	var a registry.Ack
	if err := json.Unmarshal(kv.Value, &a); err != nil {
		return false
	}
	return a.CoversKey(key) && a.RevisionFor(key) < rev
}
