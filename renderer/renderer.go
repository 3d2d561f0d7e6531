// Package renderer keeps files rendered from etcd with confd-compatible
// template resources: it lists then watches the resources' keys, renders
// only what a change touches, stages, checks and installs atomically,
// reloads once per batch, and acknowledges the applied revision under
// _renderers/<id> for registrars that drain. See README.md.
package renderer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/cli"
	"github.com/rollcall/rollcall/embedetcd"
	"github.com/rollcall/rollcall/etcdclient"
	"github.com/rollcall/rollcall/registry"
)

// Renderer is the state of one Run: its loop owns everything but the
// atomics, which the HTTP handlers read.
type Renderer struct {
	cfg    Config
	base   *slog.Logger // for components: base.With("component", ...)
	log    *slog.Logger
	m      *Metrics
	cli    *clientv3.Client
	store  *store
	stdout io.Writer

	etcdCfg clientv3.Config // cli's: to explain connection errors

	states  []*resState
	byID    map[string]*resState // by res.Path, the scheduler's id
	index   keyIndex             // which resources a key touches
	sched   *scheduler
	ack     *acker
	gate    *valueGate // withholds invalid instance values (values.go)
	guard   *guard     // holds mass removals (guard.go)
	lanes   *lanes     // checks, installs and reloads run apart from the loop (lanes.go); nil = inline (--onetime)
	push    *pusher    // resources with push (push.go)
	loadErr []string   // resources that failed to load at the last (re)load

	testHookBeforeSnapshot func()            // tests: a watcher storing a change between collect and snapshot
	testHookInstall        func(dest string) // tests: runs once a file is installed, before its checks and reload (apart from the loop)

	watchPrefixes []string
	watchRegistry []string
	watchCancel   context.CancelFunc
	watchDone     chan struct{}

	up       atomic.Bool
	current  atomic.Bool            // nothing pending, nothing failing, store loaded
	why      atomic.Pointer[string] // why not ready beyond pending changes: load errors, failing, held
	running  atomic.Bool
	upLogged atomic.Int32 // 0 unknown, 1 up, 2 down: log transitions once
	quitWarn atomic.Bool  // warned once that nginx's old workers could not be told to quit
}

// onetimeListTimeout bounds --onetime's wait for etcd.
const onetimeListTimeout = 10 * time.Second

// ErrFailed is returned by a --onetime run in which a resource failed.
var ErrFailed = errors.New("some resources failed")

// Run runs the renderer until ctx is done (or, with Onetime, once). Its
// metrics are registered on reg; if reg is also a prometheus.Gatherer it is
// what /metrics serves.
func Run(ctx context.Context, cfg Config, log *slog.Logger, reg prometheus.Registerer) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	r := newRenderer(cfg, log, NewMetrics(reg))
	endpoints := cfg.Endpoints
	if cfg.EmbedEtcd != "" {
		sctx, cancel := context.WithTimeout(ctx, embedetcd.StartTimeout)
		srv, err := embedetcd.Start(sctx, embedetcd.Config{Dir: cfg.EmbedEtcd, ClientAddr: cfg.EmbedListen})
		cancel()
		if err != nil {
			return err
		}
		defer srv.Close()
		endpoints = []string{srv.Endpoint}
		log.Info("embedded etcd serving", "dir", cfg.EmbedEtcd, "endpoint", srv.Endpoint)
	}
	cli, cc, err := r.connect(ctx, cfg, endpoints)
	if err != nil {
		if ctx.Err() != nil { // stopped while waiting for etcd
			return nil
		}
		return err
	}
	defer func() {
		if err := etcdclient.Close(cli); err != nil {
			r.log.Warn("stopping", "err", err)
		}
	}()
	r.cli, r.etcdCfg = cli, cc
	r.loadResources(time.Now())
	if cfg.Onetime {
		return r.once(ctx)
	}
	if cfg.MetricsAddr != "" {
		stop, err := r.serve(ctx, reg)
		if err != nil {
			return err
		}
		defer stop()
	}
	return r.run(ctx)
}

// newRenderer wires a Renderer for a validated cfg (no etcd client yet).
func newRenderer(cfg Config, log *slog.Logger, m *Metrics) *Renderer {
	r := &Renderer{
		cfg: cfg, base: log, log: log.With("component", "renderer"), m: m, store: newStore(), stdout: cfg.Stdout,
		sched: newScheduler(schedConfig{burst: cfg.ReloadBurst, every: cfg.Cooldown, wait: cfg.Wait}),
		push:  newPusher(cfg.Push),
	}
	if r.stdout == nil {
		r.stdout = os.Stdout
	}
	r.gate = newValueGate(!cfg.LaxValues, log.With("component", "values"), m.invalidSkipped)
	r.gate.dirCounter = m.invalidKeys
	r.guard = newGuard(cfg.GuardShare, cfg.GuardGrace, log.With("component", "guard"), func(name string) {
		m.guardHolds.WithLabelValues(name).Inc()
	})
	return r
}

func newClient(cfg Config, endpoints []string) (*clientv3.Client, clientv3.Config, error) {
	cc, err := etcdclient.Config{
		Endpoints:        endpoints,
		DialTimeout:      5 * time.Second,
		KeepAliveTime:    5 * time.Second,
		KeepAliveTimeout: 3 * time.Second,
		RetryCap:         500 * time.Millisecond, // served within 1s of etcd's return after any outage (2s measured up to 1.7s)
		CACert:           cfg.CACert,
		Cert:             cfg.Cert,
		Key:              cfg.Key,
		User:             cfg.User,
		Password:         cfg.Password,
	}.ClientConfig()
	if err != nil {
		return nil, cc, &cli.UsageError{Err: fmt.Errorf("etcd TLS: %w", err)}
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, cc, fmt.Errorf("etcd client: %w", etcdclient.Explain(context.Background(), cc, err))
	}
	return cli, cc, nil
}

// run is the loop: the watcher fills the store and flips its dirty flag;
// the loop decides when to apply.
func (r *Renderer) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel: the acker revokes its lease, confwatch stops
	defer cancel()
	if !r.cfg.Noop {
		r.ack = newAcker(r.cli, registry.RendererKey(r.cfg.Prefix, r.cfg.ID), r.cfg.AckTTL, r.base.With("component", "ack"))
		wg.Go(func() { r.ack.Run(ctx) })
	}
	cw := &confWatcher{dir: r.cfg.ConfDir, log: r.base.With("component", "confwatch"), changed: make(chan struct{}, 1),
		hup: r.cfg.Reload, hupped: make(chan struct{}, 1)}
	wg.Go(func() { cw.Run(ctx) })
	r.lanes = newLanes(r, &wg)
	r.restartWatch(ctx)
	defer r.stopWatch()
	r.running.Store(true)
	defer r.running.Store(false)
	var al alarm
	defer al.Stop()
	for {
		r.arm(&al, time.Now())
		select {
		case <-ctx.Done():
			return nil
		case <-r.store.Dirty():
			r.collect(time.Now())
		case <-al.C():
			r.applyDue(ctx, time.Now())
		case ld := <-r.lanes.landed:
			r.lanes.Land(ctx, time.Now(), ld)
			r.afterBatch()
		case d := <-r.lanes.done:
			r.lanes.Finish(ctx, time.Now(), d)
			r.afterBatch()
		case pj := <-r.lanes.pushed:
			r.lanes.PushLanded(time.Now(), pj)
			r.afterBatch()
		case <-cw.hupped:
			r.guard.Confirm() // the operator confirms held renders; the reload below retries them
		case <-cw.changed:
			r.log.Info("configuration changed, reloading resources")
			r.loadResources(time.Now())
			r.restartWatch(ctx)
		}
	}
}

// once lists, applies every resource and reports whether all succeeded.
func (r *Renderer) once(ctx context.Context) error {
	w := r.newWatcher(r.prefixes())
	w.listTimeout = onetimeListTimeout
	if _, err := w.list(ctx); err != nil {
		return w.explain(ctx, err)
	}
	r.store.Changes()
	snap := r.store.Snapshot()
	res := r.apply(ctx, snap, r.states)
	r.runReloads(ctx, &res)
	for _, st := range res.ok {
		r.applied(st)
	}
	if n := len(res.failed) + len(r.loadErr); n > 0 {
		return fmt.Errorf("%w: %d of %d", ErrFailed, n, len(r.states)+len(r.loadErr))
	}
	r.log.Info("applied once", "resources", len(res.ok), "rev", r.store.Rev())
	return nil
}

// prefixes is the union of the resources' watch prefixes, collapsed.
func (r *Renderer) prefixes() []string {
	var ps []string
	for _, st := range r.states {
		ps = append(ps, st.prefixes...)
	}
	return registry.Collapse(ps)
}

// registryPrefixes are the prefixes whose reserved subtrees (_ports/,
// _renderers/) the renderer ignores: its global prefix (the root when
// unset: where it acknowledges) and each resource's prefix (where a
// confd-style resource reads its registry).
func (r *Renderer) registryPrefixes() []string {
	ps := []string{r.cfg.Prefix}
	for _, st := range r.states {
		ps = append(ps, st.res.Prefix)
	}
	slices.Sort(ps)
	return slices.Compact(ps)
}

func (r *Renderer) newWatcher(prefixes []string) *watcher {
	return &watcher{
		cli: r.cli, etcd: r.etcdCfg, prefixes: prefixes, store: r.store, log: r.base.With("component", "watch"), m: r.m,
		interval: r.cfg.Interval, up: r.setUp, probeKey: registry.RendererKey(r.cfg.Prefix, r.cfg.ID),
		registry: r.registryPrefixes(), gate: r.gate,
	}
}

// restartWatch (re)starts the watcher when the watched prefixes changed.
func (r *Renderer) restartWatch(ctx context.Context) {
	ps := r.prefixes()
	if r.watchDone != nil && slices.Equal(ps, r.watchPrefixes) && slices.Equal(r.registryPrefixes(), r.watchRegistry) {
		return
	}
	r.stopWatch()
	r.watchPrefixes = ps
	w := r.newWatcher(ps)
	r.watchRegistry = w.registry
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	r.watchCancel, r.watchDone = cancel, done
	go func() { // owned: stopWatch cancels and waits for done
		defer close(done)
		w.Run(wctx)
	}()
	r.log.Info("watching", "prefixes", ps)
}

func (r *Renderer) stopWatch() {
	if r.watchDone == nil {
		return
	}
	r.watchCancel()
	<-r.watchDone
	r.watchDone = nil
}

func (r *Renderer) setUp(up bool) {
	r.up.Store(up)
	if up {
		r.m.etcdUp.Set(1)
		if r.upLogged.Swap(1) == 2 {
			r.log.Info("etcd reachable again")
		}
		return
	}
	r.m.etcdUp.Set(0)
	if r.upLogged.Swap(2) != 2 {
		r.log.Warn("etcd unreachable, keeping the last good files")
	}
}

// collect hands the store's changes, mapped to the resources they touch,
// to the scheduler.
func (r *Renderer) collect(now time.Time) {
	c, ok := r.store.Take()
	if !ok {
		return
	}
	cs := changeSet{rev: c.rev, since: c.since, keys: len(c.keys), all: c.all}
	if !c.all {
		cs.ids = r.index.touched(c.keys)
	}
	r.sched.Changed(now, cs)
	if c.all && len(r.states) == 0 {
		r.publish() // nothing to render: still say what is watched
	}
	r.updateCurrent()
}

// arm sets the alarm to when the scheduler next has something due.
func (r *Renderer) arm(al *alarm, now time.Time) {
	var at time.Time
	ok := false
	if r.store.Loaded() {
		at, ok = r.sched.Next()
	}
	al.Set(now, at, ok)
}

// applyDue applies what the scheduler says is due, then publishes the
// acknowledgement.
func (r *Renderer) applyDue(ctx context.Context, now time.Time) {
	// Collect before the snapshot: a change stored in between is then in
	// the snapshot but not yet collected. It is applied with a later batch,
	// and the scheduler's ack stays below it (it is bounded by the
	// collected revision, not the snapshot's).
	r.collect(now)
	if !r.store.Loaded() {
		return
	}
	ids := r.sched.Due(now)
	if ids == nil {
		return
	}
	if h := r.testHookBeforeSnapshot; h != nil {
		h()
	}
	snap := r.store.Snapshot()
	todo, held := r.sortDue(snap, ids, now)
	if len(todo) == 0 {
		if len(held) > 0 {
			r.sched.Applied(now, batch{rev: snap.rev, held: held})
			r.afterBatch()
		}
		return
	}
	todo = r.withPushes(snap, todo)
	var (
		res     batchResult
		f       *flight
		reloads int
	)
	if r.lanes == nil { // no loop (tests): the whole batch here
		res = r.apply(ctx, snap, todo)
		reloads = len(res.reloads)
		r.runReloads(ctx, &res)
	} else {
		res, f = r.begin(ctx, snap, todo)
		if !r.cfg.Noop {
			reloads = f.reloads()
		}
	}
	end := r.recordBatch(snap, res, held, f, reloads)
	apart := 0
	if f != nil {
		apart = len(f.jobs) + len(f.pushes)
		r.lanes.Fly(ctx, f)
	}
	r.afterBatch()
	r.log.Info("applied", "rev", snap.rev, "resources", len(todo), "failed", len(res.failed), "apart", apart, "reloads", reloads, "held", len(held), "took", end.Sub(now))
}

// sortDue splits the due resources at snap into those to apply now and
// those the guard holds (with until when); a resource whose keys are not
// listed yet goes back to the scheduler.
func (r *Renderer) sortDue(snap *snapshot, ids []string, now time.Time) (todo []*resState, held map[string]time.Time) {
	var unlisted []string
	held = map[string]time.Time{}
	for _, id := range ids {
		st := r.byID[id]
		switch {
		case !snap.Has(st.prefixes):
			unlisted = append(unlisted, id)
		case r.hold(st, snap, now, held):
		default:
			todo = append(todo, st)
		}
	}
	r.sched.PutBack(unlisted) // due again once their keys are listed
	return todo, held
}

// recordBatch tells the scheduler how the batch at snap went and marks
// what applied. Resources of its flight f (checks, installs and reloads
// apart from the loop; nil: none) are busy until they land and their lanes
// finish. It returns when the batch ended.
func (r *Renderer) recordBatch(snap *snapshot, res batchResult, held map[string]time.Time, f *flight, reloads int) time.Time {
	end := time.Now()
	var busy []string
	if f != nil {
		for _, j := range f.jobs {
			busy = append(busy, j.st.res.Path)
		}
		busy = append(busy, f.pushes...)
	}
	coalesced := r.sched.Applied(end, batch{rev: snap.rev, ok: resIDs(res.ok), failed: resIDs(res.failed), held: held, busy: busy, reloads: reloads})
	if coalesced > 0 {
		r.m.reloadsCoalesced.Add(float64(coalesced))
	}
	for _, st := range res.ok {
		r.applied(st)
	}
	return end
}

// hold asks the guard whether st may render snap; a held resource is added
// to held with when to look again.
func (r *Renderer) hold(st *resState, snap *snapshot, now time.Time, held map[string]time.Time) bool {
	until, ok := r.guard.Check(st.res.Path, st.name, st.res.Guard, viewOf(snap.For(st.prefixes)), now)
	if ok {
		held[st.res.Path] = until
		r.m.guardHeld.WithLabelValues(st.name).Set(1)
		return true
	}
	r.m.guardHeld.WithLabelValues(st.name).Set(0)
	return false
}

// applied is what follows a resource's successful apply: the guard counts
// from it, and no install waits for its reload any more.
func (r *Renderer) applied(st *resState) {
	r.guard.Commit(st.res.Path)
	if st.unconfirmed {
		if err := clearPending(st.res.Dest); err != nil {
			r.log.Error("clear pending mark", "resource", st.name, "err", err)
			return
		}
		st.unconfirmed = false
	}
}

// afterBatch updates what a batch (or a reload that ran apart) changed:
// metrics, the acknowledgement, readiness.
func (r *Renderer) afterBatch() {
	failing := r.sched.FailingIDs()
	for _, st := range r.states {
		v := 0.0
		if slices.Contains(failing, st.res.Path) {
			v = 1
		}
		r.m.resourceFailing.WithLabelValues(st.name).Set(v)
	}
	r.m.failing.Set(float64(len(failing)))
	r.publish()
	r.updateCurrent()
}

func resIDs(sts []*resState) []string {
	ids := make([]string, len(sts))
	for i, st := range sts {
		ids[i] = st.res.Path
	}
	return ids
}

// publish acknowledges the revision every resource has applied.
func (r *Renderer) publish() {
	rev := r.sched.Ack()
	r.m.appliedRevision.Set(float64(rev))
	if r.ack != nil {
		ps := r.watchPrefixes
		if ps == nil {
			ps = []string{}
		}
		byRes := make(map[string][]string, len(r.states))
		for _, st := range r.states {
			byRes[st.res.Path] = st.prefixes
		}
		r.ack.Publish(registry.Ack{Revision: rev, Prefixes: ps, Applied: r.sched.PrefixAcks(byRes), Updated: time.Now().UTC()})
	}
}

func (r *Renderer) updateCurrent() {
	r.current.Store(r.sched.Idle() && r.store.Loaded())
	var why []string
	if len(r.loadErr) > 0 {
		why = append(why, "failed to load: "+strings.Join(r.loadErr, ", "))
	}
	name := func(id string) string {
		if st := r.byID[id]; st != nil {
			return st.name
		}
		return id
	}
	if ids := r.sched.FailingIDs(); len(ids) > 0 {
		ns := make([]string, len(ids))
		for i, id := range ids {
			ns[i] = name(id)
		}
		why = append(why, "failing: "+strings.Join(ns, ", "))
	}
	if g := r.guard.Reason(name); g != "" {
		why = append(why, g)
	}
	s := strings.Join(why, "; ")
	r.why.Store(&s)
}
