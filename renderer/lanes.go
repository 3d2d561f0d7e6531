package renderer

import (
	"context"
	"sync"
	"time"
)

// lanes runs reload commands apart from the loop, one lane per distinct
// command: a reload_cmd that hangs until --command-timeout delays only the
// resources it reloads, never another resource's batch. Runs of one command
// never overlap (two nginx reloads at once would confuse their
// confirmation): a group that arrives while its command runs waits in the
// lane's queue and joins the next run. All of it but the command runs on
// the loop's goroutine.
type lanes struct {
	r       *Renderer
	wg      *sync.WaitGroup // the loop's: Run waits for every lane
	done    chan laneDone   // to the loop
	running map[string]bool
	queued  map[string]*reloadGroup
}

// laneDone is one finished run of a lane.
type laneDone struct {
	g   *reloadGroup
	err error
}

func newLanes(r *Renderer, wg *sync.WaitGroup) *lanes {
	return &lanes{r: r, wg: wg, done: make(chan laneDone), running: map[string]bool{}, queued: map[string]*reloadGroup{}}
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
	r := l.r
	ok, failed := r.reloaded(d.g, d.err)
	for _, it := range ok {
		r.sched.Done(now, it.st.res.Path, it.rev, true)
		r.applied(it.st)
	}
	for _, it := range failed {
		r.sched.Done(now, it.st.res.Path, it.rev, false)
	}
	if q := l.queued[d.g.cmd]; q != nil {
		delete(l.queued, d.g.cmd)
		l.Start(ctx, q)
	}
}
