package registrar

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/registry"
)

// lostMemory is how long the roster remembers a renderer whose ack key
// expired. A renderer cut off from etcd comes back within seconds of etcd
// answering; one whose host died never does, and a drain would wait its
// --drain-timeout for it until then.
const lostMemory = 10 * time.Minute

// roster follows the renderer acks under the drain's dirs while the
// registrar runs and remembers every renderer whose ack key vanished
// without a clean stop: its lease expired, so the renderer may be alive and
// still routing to this instance, only cut off from etcd (after an outage
// longer than its ack TTL, until it reconnects). The drain waits for those
// too (bounded by --drain-timeout); a renderer that stopped cleanly marked
// its last ack Stopped before revoking its lease and is forgotten.
type roster struct {
	etcd *conn
	dirs []string // registry.AckDirs of the instance key
	log  *slog.Logger

	mu   sync.Mutex
	lost map[string]lostAck // ack key ->
}

type lostAck struct {
	ack   registry.Ack // the last ack seen
	since time.Time    // when its key vanished
}

func newRoster(etcd *conn, key string, log *slog.Logger) *roster {
	return &roster{etcd: etcd, dirs: registry.AckDirs(key), log: log, lost: map[string]lostAck{}}
}

// Run watches the acks until ctx is done, resuming after any failure. It
// starts after a random part of spread: many registrars starting at once
// (a host or a deploy) then do not add their watches to etcd's busiest
// moment, their registrations.
func (r *roster) Run(ctx context.Context, spread time.Duration) {
	if sleepCtx(ctx, rand.N(spread+1)) != nil {
		return
	}
	for attempt := 0; ; attempt++ {
		err := r.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		r.log.Debug("roster: watch ended, resuming", "err", err)
		if sleepCtx(ctx, backoff(attempt, 2*time.Second)) != nil {
			return
		}
	}
}

// follow watches every dir from the present revision on, with previous
// values, until ctx is done or the watch fails (a compaction included: the
// next watch starts from the present again). A watch from a known revision
// resumes there after a disconnect, so a deletion made while the
// registrar was cut off is still seen.
func (r *roster) follow(ctx context.Context) error {
	cli, err := r.etcd.get()
	if err != nil {
		return err
	}
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	resp, err := cli.Get(gctx, r.dirs[0], clientv3.WithPrefix(), clientv3.WithCountOnly())
	cancel()
	if err != nil {
		return fmt.Errorf("read %s: %w", r.dirs[0], err)
	}
	r.log.Debug("roster: following renderer acks", "rev", resp.Header.Revision)
	return watchDirs(ctx, cli, r.dirs, resp.Header.Revision+1, func(wr clientv3.WatchResponse) bool {
		for _, ev := range wr.Events {
			r.observe(ev, time.Now())
		}
		return false
	})
}

// observe records one ack event: a deletion whose previous value was not a
// stopped ack is a lost renderer; a put means it is back.
func (r *roster) observe(ev *clientv3.Event, now time.Time) {
	key := string(ev.Kv.Key)
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.lost, key)
	if ev.Type != mvccpb.DELETE {
		return
	}
	if prev, expired := expiredAck(ev); expired {
		r.lost[key] = lostAck{ack: prev, since: now}
		r.log.Warn("renderer's ack expired without a clean stop: a drain will wait for it", "key", key, "rev", prev.Revision)
	}
}

// Lost returns the acks lost within lostMemory before now, by ack key.
func (r *roster) Lost(now time.Time) map[string]registry.Ack {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	maps.DeleteFunc(r.lost, func(_ string, l lostAck) bool { return now.Sub(l.since) > lostMemory })
	out := make(map[string]registry.Ack, len(r.lost))
	for k, l := range r.lost {
		out[k] = l.ack
	}
	return out
}

// expiredAck reports whether a deletion event removed a renderer ack
// without a clean stop, and that ack. A previous value that is no ack is
// not a renderer's.
func expiredAck(ev *clientv3.Event) (registry.Ack, bool) {
	var prev registry.Ack
	if ev.PrevKv == nil {
		return prev, false
	}
	if err := json.Unmarshal(ev.PrevKv.Value, &prev); err != nil {
		return prev, false
	}
	return prev, !prev.Stopped
}

// watchDirs watches every dir (prefix, with previous values) from fromRev
// (0: from now) and hands each response to handle until handle returns
// true, ctx ends, or a response carries an error.
func watchDirs(ctx context.Context, cli *clientv3.Client, dirs []string, fromRev int64, handle func(clientv3.WatchResponse) bool) error {
	var wg sync.WaitGroup
	defer wg.Wait() // runs after cancel: the watches close and the forwarders return
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan clientv3.WatchResponse)
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithPrevKV()}
	if fromRev > 0 {
		opts = append(opts, clientv3.WithRev(fromRev))
	}
	for _, dir := range dirs {
		wch := cli.Watch(ctx, dir, opts...)
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
	for {
		var wr clientv3.WatchResponse
		select {
		case wr = <-events:
		case <-ctx.Done():
			return ctx.Err()
		}
		if err := wr.Err(); err != nil {
			return err
		}
		if handle(wr) {
			return nil
		}
	}
}
