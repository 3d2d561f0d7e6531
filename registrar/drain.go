package registrar

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/registry"
)

// waitDrained waits until every live renderer whose prefixes cover key has
// acknowledged revision rev or later (or its ack key is gone), at most
// timeout. Renderer acks live under dir on the renderers' leases, so a dead
// renderer's key vanishes and is not waited for. It returns the ids still
// pending when time ran out or ctx ended, and logs what it waited for. The
// caller passes a ctx that outlives the shutdown signal (the drain is part
// of the shutdown) but ends early on a second signal or when the app exits.
func waitDrained(ctx context.Context, cli *clientv3.Client, dir, key string, rev int64, timeout time.Duration, log *slog.Logger) []string {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var pending map[string]bool
	for attempt := 0; ; attempt++ {
		resp, err := cli.Get(ctx, dir, clientv3.WithPrefix())
		if err != nil {
			log.Warn("drain: cannot read renderer acks, stopping the app", "err", err, "took", time.Since(start))
			return slices.Sorted(maps.Keys(pending))
		}
		pending = map[string]bool{}
		for _, kv := range resp.Kvs {
			if id, lagging := ackLags(dir, key, rev, kv); lagging {
				pending[id] = true
			}
		}
		if len(pending) == 0 && attempt == 0 {
			log.Info("drain: no renderer to wait for", "key", key, "rev", rev, "renderers", len(resp.Kvs))
			return nil
		}
		if attempt == 0 {
			log.Info("drain: waiting for renderers", "key", key, "rev", rev, "renderers", slices.Sorted(maps.Keys(pending)))
		}
		err = watchAcks(ctx, cli, dir, key, rev, resp.Header.Revision+1, pending)
		if len(pending) == 0 {
			log.Info("drain: renderers acknowledged", "key", key, "rev", rev, "took", time.Since(start))
			return nil
		}
		if ctx.Err() != nil {
			left := slices.Sorted(maps.Keys(pending))
			log.Warn("drain: not acknowledged in time, stopping the app anyway", "key", key, "rev", rev, "pending", left, "took", time.Since(start))
			return left
		}
		log.Debug("drain: watch ended, reading acks again", "err", err)
		if sleepCtx(ctx, backoff(attempt, time.Second)) != nil {
			continue // the next Get fails on ctx and reports
		}
	}
}

// watchAcks removes renderers from pending as they acknowledge rev or go
// away, watching dir from fromRev. It returns when pending is empty, ctx
// ends, or the watch fails.
func watchAcks(ctx context.Context, cli *clientv3.Client, dir, key string, rev, fromRev int64, pending map[string]bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := cli.Watch(ctx, dir, clientv3.WithPrefix(), clientv3.WithRev(fromRev))
	for len(pending) > 0 {
		wr, ok := <-wch
		if !ok {
			return ctx.Err()
		}
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			id, lagging := ackLags(dir, key, rev, ev.Kv)
			if ev.Type == mvccpb.DELETE || !lagging {
				delete(pending, id)
			}
		}
	}
	return nil
}

// ackLags reports whether the renderer ack in kv covers key and is behind
// rev. An ack that does not parse covers nothing.
func ackLags(dir, key string, rev int64, kv *mvccpb.KeyValue) (string, bool) {
	id := strings.TrimPrefix(string(kv.Key), dir)
	var a registry.Ack
	if err := json.Unmarshal(kv.Value, &a); err != nil {
		return id, false
	}
	return id, a.CoversKey(key) && a.Revision < rev
}
