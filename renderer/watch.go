package renderer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/etcdclient"
	"github.com/rollcall/rollcall/registry"
)

// manyPrefixes is where list switches from a Get per prefix to one Get
// over their span.
const manyPrefixes = 16

// probeEvery is how often the watcher checks that etcd answers.
const probeEvery = 2 * time.Second

// watcher keeps a store equal to etcd under its prefixes: one consistent
// list at one revision, then one watch from the next revision.
type watcher struct {
	cli         *clientv3.Client
	etcd        clientv3.Config // cli's, to explain connection errors
	prefixes    []string        // collapsed: none covers another; sorted
	store       *store
	log         *slog.Logger
	m           *Metrics
	interval    time.Duration // safety re-list; 0 = never
	up          func(bool)    // etcd reachable or not
	probeKey    string        // a key to Get (count only) when probing
	listTimeout time.Duration // bound of one list; 0 = 30s
	relist      chan struct{} // cap 1: the probe saw etcd's revision go back
	back        chan struct{} // cap 1: the probe saw etcd answer again after failing
	progress    time.Duration // how often to ask for a progress notification; 0 = progressEvery
	registry    []string      // registry prefixes: their reserved subtrees are ignored
	gate        *valueGate    // withholds invalid instance values; nil = none
}

// progressEvery is how often a quiet watch asks the server for a progress
// notification. A watch that answers nothing for three of these while etcd
// has moved on (a member cut off from the cluster that still holds the
// stream) is broken and resumed, possibly on another member.
const progressEvery = 5 * time.Second

var (
	errCompacted = errors.New("watch revision compacted")
	// errRewound: etcd's revision is behind the store's, so etcd was
	// replaced or restored from a backup. A watch from the store's revision
	// would wait for revisions the new history reaches only much later and
	// miss every change until then: list again.
	errRewound = errors.New("etcd revision went back")
)

// Run lists and watches until ctx is done, re-listing after compaction and
// backing off while etcd is unreachable. The store is only ever replaced
// with a complete list.
func (w *watcher) Run(ctx context.Context) {
	w.relist = make(chan struct{}, 1)
	w.back = make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { w.probe(ctx) })
	for attempt := 0; ; attempt++ {
		rev, err := w.list(ctx)
		if err == nil {
			attempt = 0
			w.up(true)
			err = w.watch(ctx, rev)
		}
		if ctx.Err() != nil {
			return
		}
		switch {
		case errors.Is(err, errCompacted), errors.Is(err, errRewound):
			w.log.Info("listing again", "rev", rev, "reason", err)
			attempt = -1
			continue
		case err != nil:
			w.up(false)
			w.log.Warn("etcd unreachable, keeping the last good files", "err", w.explain(ctx, err))
		}
		if w.pause(ctx, attempt) != nil {
			return
		}
	}
}

// list reads every prefix at one revision and replaces the store.
func (w *watcher) list(ctx context.Context) (int64, error) {
	timeout := w.listTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	kvs := map[string]string{}
	var rev int64
	// Few prefixes: one Get each (the first fixes the revision). Many (a
	// resource per app): one Get over their span beats a round trip each.
	type get struct {
		key  string
		opts []clientv3.OpOption
	}
	var gets []get
	if len(w.prefixes) > manyPrefixes {
		start, end := w.span()
		gets = []get{{start, []clientv3.OpOption{clientv3.WithRange(end)}}}
	} else {
		for _, p := range w.prefixes {
			gets = append(gets, get{p, []clientv3.OpOption{clientv3.WithPrefix()}})
		}
	}
	for _, g := range gets {
		if rev > 0 {
			g.opts = append(g.opts, clientv3.WithRev(rev))
		}
		resp, err := w.cli.Get(ctx, g.key, g.opts...)
		if err != nil {
			return 0, fmt.Errorf("list %q: %w", g.key, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if k := string(kv.Key); w.keeps(k) {
				kvs[k] = string(kv.Value)
			}
		}
	}
	if w.gate != nil {
		w.gate.filter(kvs)
	}
	if rev == 0 { // nothing watched: learn the revision anyway
		resp, err := w.cli.Get(ctx, w.probeKey, clientv3.WithCountOnly())
		if err != nil {
			return 0, fmt.Errorf("list: %w", err)
		}
		rev = resp.Header.Revision
	}
	w.store.Replace(kvs, rev, w.prefixes)
	w.m.watchRevision.Set(float64(rev))
	w.log.Debug("listed", "rev", rev, "keys", len(kvs), "prefixes", len(w.prefixes))
	return rev, nil
}

// span is the one key range covering every prefix: [start, end).
func (w *watcher) span() (start, end string) {
	for i, p := range w.prefixes {
		if p == "" {
			return "\x00", "\x00"
		}
		e := clientv3.GetPrefixRangeEnd(p)
		if i == 0 || p < start {
			start = p
		}
		if i == 0 || e > end {
			end = e
		}
	}
	return start, end
}

// watch follows changes from rev+1. It returns errCompacted when rev is gone,
// nil when ctx is done or a safety re-list is due, or the error that broke it.
func (w *watcher) watch(ctx context.Context, rev int64) error {
	if len(w.prefixes) == 0 {
		<-ctx.Done()
		return nil
	}
	var relist <-chan time.Time
	if w.interval > 0 {
		t := time.NewTimer(w.interval)
		defer t.Stop()
		relist = t.C
	}
	start, end := w.span()
	for attempt := 0; ; attempt++ {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := w.cli.Watch(wctx, start, clientv3.WithRange(end), clientv3.WithRev(rev+1), clientv3.WithProgressNotify())
		err := w.follow(wctx, wch, &rev, relist)
		cancel()
		if ctx.Err() != nil || err == nil || errors.Is(err, errCompacted) || errors.Is(err, errRewound) {
			return err
		}
		w.up(false)
		w.log.Warn("watch broken, resuming", "rev", rev+1, "err", err)
		if w.pause(ctx, attempt) != nil {
			return nil
		}
	}
}

// follow applies watch responses to the store until the channel closes.
// wctx is the watch's own context: progress requests must carry its
// metadata to reach its stream.
func (w *watcher) follow(wctx context.Context, wch clientv3.WatchChan, rev *int64, relist <-chan time.Time) error {
	every := w.progress
	if every <= 0 {
		every = progressEvery
	}
	probe := time.NewTicker(every)
	defer probe.Stop()
	var last, behind time.Time // last response; since when etcd is past *rev
	last = time.Now()
	for {
		select {
		case <-wctx.Done():
			return nil
		case <-probe.C:
			if err := w.silent(wctx, *rev, every, last, &behind); err != nil {
				return err
			}
			// The watch channel reports the stream's errors; this one is
			// only the request's.
			if err := w.cli.RequestProgress(wctx); err != nil {
				w.log.Debug("request progress", "err", err)
			}
		case <-relist:
			return nil
		case <-w.relist:
			return errRewound
		case resp, ok := <-wch:
			if !ok {
				if wctx.Err() != nil { // closed because the watch ended: both were ready
					return nil
				}
				return errors.New("watch channel closed")
			}
			last, behind = time.Now(), time.Time{}
			if err := w.apply(resp, rev); err != nil {
				return err
			}
		}
	}
}

// apply stores one watch response's changes (those the watcher keeps, past
// the value gate) and moves rev to its revision.
func (w *watcher) apply(resp clientv3.WatchResponse, rev *int64) error {
	if resp.CompactRevision != 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted) {
		return errCompacted
	}
	if err := resp.Err(); err != nil {
		return err
	}
	chs := make([]change, 0, len(resp.Events))
	for _, ev := range resp.Events {
		k := string(ev.Kv.Key)
		if !w.keeps(k) {
			continue
		}
		c := change{key: k, value: string(ev.Kv.Value), del: ev.Type == clientv3.EventTypeDelete}
		if w.gate != nil {
			c = w.gate.change(c)
		}
		chs = append(chs, c)
	}
	w.m.watchEvents.Add(float64(len(chs)))
	w.store.Apply(chs, resp.Header.Revision)
	*rev = max(*rev, resp.Header.Revision)
	w.m.watchRevision.Set(float64(*rev))
	w.up(true)
	return nil
}

// silent reports a watch that has answered nothing, neither events nor
// progress notifications, for three periods while etcd's revision was past
// rev. etcd answers a progress request only once its revision reached the
// watch's start, so a quiet etcd is no silent watch.
func (w *watcher) silent(wctx context.Context, rev int64, every time.Duration, last time.Time, behind *time.Time) error {
	if time.Since(last) < 3*every {
		return nil
	}
	gctx, cancel := context.WithTimeout(wctx, every)
	resp, err := w.cli.Get(gctx, w.probeKey, clientv3.WithCountOnly())
	cancel()
	switch {
	case err != nil:
		return fmt.Errorf("watch silent and etcd unreachable: %w", err)
	case resp.Header.Revision <= rev:
		*behind = time.Time{}
		return nil
	case behind.IsZero():
		*behind = time.Now()
		return nil
	case time.Since(*behind) < 3*every:
		return nil
	}
	w.m.watchSilent.Inc()
	return fmt.Errorf("watch silent for %v while etcd moved from %d to %d", time.Since(last).Round(time.Millisecond), rev, resp.Header.Revision)
}

// keeps reports whether key feeds the store: under a watched prefix and
// not in a reserved subtree (registry.Reserved) of a registry prefix. The
// renderer's own acks therefore never cause a render->ack loop.
func (w *watcher) keeps(key string) bool {
	return w.covered(key) && !slices.ContainsFunc(w.registry, func(p string) bool { return registry.Reserved(p, key) })
}

func (w *watcher) covered(key string) bool {
	for _, p := range w.prefixes {
		if registry.Covers(p, key) {
			return true
		}
	}
	return false
}

// probe asks etcd every probeEvery whether it answers, for etcd_up and
// readiness: the client's own reconnects are otherwise invisible.
func (w *watcher) probe(ctx context.Context) {
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	down := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// What was seen before the request: a watch event applied while the
		// Get is in flight is newer than the Get's header, and is no sign
		// of etcd going back (the Get is linearizable, so its header is at
		// least every revision seen before it was sent).
		have := w.store.Rev()
		pctx, cancel := context.WithTimeout(ctx, probeEvery)
		resp, err := w.cli.Get(pctx, w.probeKey, clientv3.WithCountOnly())
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			w.up(false)
			down = true
			continue
		}
		w.up(true)
		if down { // wake a list or watch waiting for its next attempt
			down = false
			select {
			case w.back <- struct{}{}:
			default:
			}
		}
		w.m.etcdRevision.Set(float64(resp.Header.Revision))
		if rev := resp.Header.Revision; rev < have {
			w.log.Warn("etcd's revision is behind what was seen: etcd was replaced or restored", "etcd_rev", rev, "seen_rev", have)
			select {
			case w.relist <- struct{}{}:
			default:
			}
		}
	}
}

// explain attaches the connection's real cause (x509, a refused client
// certificate, a refused address) to an error that only says a deadline
// passed (etcdclient.Explain).
func (w *watcher) explain(ctx context.Context, err error) error {
	return etcdclient.Explain(ctx, w.etcd, err)
}

// pause waits before the next list or watch attempt: a backoff capped at
// 1s (each attempt waits for the connection by itself, so a failing etcd
// is not hammered), cut short when the probe sees etcd answer again, so
// the pickup after an outage never waits out a backoff.
func (w *watcher) pause(ctx context.Context, attempt int) error {
	t := time.NewTimer(backoff(attempt, 100*time.Millisecond, time.Second))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
	case <-w.back:
	}
	return nil
}

// backoff is exponential from base, capped, with ±25% jitter.
func backoff(attempt int, base, max time.Duration) time.Duration {
	d := base
	for i := 0; i < attempt && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	return d - d/4 + rand.N(d/2+1)
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
