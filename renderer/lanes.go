package renderer

import (
	"context"
	"sync"
	"time"
)

// lanes runs checks, installs and reload commands apart from the loop, so
// a check_cmd or reload_cmd that hangs until --command-timeout delays only
// the resources it checks or reloads, never another resource's batch.
//
// Checks and installs: one flight per batch (flight.go); a flight holds
// the lock of an installed-file check command while it installs and runs
// it, so flights that share that command take turns.
//
// Reloads: one lane per distinct command. Runs of one command never
// overlap (two nginx reloads at once would confuse their confirmation): a
// group that arrives while its command runs waits in the lane's queue and
// joins the next run.
//
// Pushes: one at a time per resource and per target (pushlane.go).
//
// All of it but the flights, the commands and the pushes runs on the
// loop's goroutine.
type lanes struct {
	r       *Renderer
	wg      *sync.WaitGroup // the loop's: Run waits for every flight and lane
	done    chan laneDone   // to the loop
	running map[string]bool
	queued  map[string]*reloadGroup

	landed  chan landing             // to the loop
	flights int                      // in the air
	locks   map[string]chan struct{} // per installed-file check command, while flights are in the air

	pushed    chan *pushJob            // to the loop (pushlane.go)
	pushing   map[string]bool          // resources whose push is out
	pushLocks map[string]chan struct{} // per push target, while pushes are out
}

// laneDone is one finished run of a lane.
type laneDone struct {
	g   *reloadGroup
	err error
}

// landing is jobs of a flight at rev that are done; last is the flight's
// end (no jobs).
type landing struct {
	rev  int64
	jobs []*job
	last bool
}

func newLanes(r *Renderer, wg *sync.WaitGroup) *lanes {
	return &lanes{r: r, wg: wg, done: make(chan laneDone), running: map[string]bool{}, queued: map[string]*reloadGroup{},
		landed: make(chan landing), locks: map[string]chan struct{}{},
		pushed: make(chan *pushJob), pushing: map[string]bool{}, pushLocks: map[string]chan struct{}{}}
}

// Fly starts f apart from the loop.
func (l *lanes) Fly(ctx context.Context, f *flight) {
	if len(f.jobs) == 0 {
		return
	}
	f.locks = map[string]chan struct{}{}
	for _, j := range f.jobs {
		if c := j.checkCmd; c != "" {
			if l.locks[c] == nil {
				l.locks[c] = make(chan struct{}, 1)
			}
			f.locks[c] = l.locks[c]
		}
	}
	l.flights++
	send := func(ld landing) {
		select {
		case l.landed <- ld:
		case <-ctx.Done():
		}
	}
	l.wg.Go(func() {
		waitPushes(ctx, f.after, pushOrderWait)
		l.r.fly(ctx, f, func(jobs []*job) { send(landing{rev: f.rev, jobs: jobs}) })
		send(landing{last: true})
	})
}

// Land takes a flight's jobs back on the loop: settles those that failed or
// need no reload and starts the reloads of the others.
func (l *lanes) Land(ctx context.Context, now time.Time, ld landing) {
	if ld.last {
		if l.flights--; l.flights == 0 {
			clear(l.locks) // no flight holds one: forget commands no longer used
		}
		return
	}
	var res batchResult
	l.r.landed(ld.rev, ld.jobs, &res)
	l.settle(now, itemsAt(res.ok, ld.rev), itemsAt(res.failed, ld.rev))
	for _, g := range res.reloads {
		l.Start(ctx, g)
	}
}

// settle tells the scheduler how busy resources ended (each at the
// revision it rendered) and marks what applied.
func (l *lanes) settle(now time.Time, ok, failed []reloadItem) {
	for _, it := range ok {
		l.r.sched.Done(now, it.st.res.Path, it.rev, true)
		l.r.applied(it.st)
	}
	for _, it := range failed {
		l.r.sched.Done(now, it.st.res.Path, it.rev, false)
	}
}

// itemsAt is sts, each at rev.
func itemsAt(sts []*resState, rev int64) []reloadItem {
	its := make([]reloadItem, len(sts))
	for i, st := range sts {
		its[i] = reloadItem{st: st, rev: rev}
	}
	return its
}

// Start runs g's command in its lane, or queues g behind the run in progress.
func (l *lanes) Start(ctx context.Context, g *reloadGroup) {
	if l.running[g.cmd] {
		q := l.queued[g.cmd]
		if q == nil {
			q = &reloadGroup{cmd: g.cmd}
			l.queued[g.cmd] = q
		}
		q.items = append(q.items, g.items...)
		return
	}
	l.running[g.cmd] = true
	l.wg.Go(func() {
		err := l.r.runReload(ctx, g)
		select {
		case l.done <- laneDone{g: g, err: err}:
		case <-ctx.Done():
		}
	})
}

// Finish records a finished run (on the loop) and starts the lane's queue.
func (l *lanes) Finish(ctx context.Context, now time.Time, d laneDone) {
	l.running[d.g.cmd] = false
	ok, failed := l.r.reloaded(d.g, d.err)
	l.settle(now, ok, failed)
	if q := l.queued[d.g.cmd]; q != nil {
		delete(l.queued, d.g.cmd)
		l.Start(ctx, q)
	}
}
