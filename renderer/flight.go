package renderer

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync"
)

// A flight is the part of a batch that runs apart from the loop: the
// {{.src}} checks of its staged files, the installs, and the checks of the
// installed files with their rollbacks. A check_cmd that hangs until
// --command-timeout delays only its own flight; other resources' batches,
// reloads and acknowledgements, and the loop itself (watch events,
// configuration reloads, /readyz, shutdown) go on. Its jobs carry what they
// need of the loop's state (board) and hand it back when they land
// (landed, on the loop): a flight touches no resState, guard or scheduler.
// Its resources are busy in the scheduler until they land (and their
// reloads end), so a resource is never in two flights.
type flight struct {
	rev   int64
	jobs  []*job
	locks map[string]chan struct{} // per installed-file check command (lanes.go); nil: none needed (inline)

	pushes []string          // the batch's resources whose pushes run apart (pushlane.go), busy until they land
	after  []<-chan struct{} // the pushes its installs and reloads follow (pushOrderWait)
}

// fly runs f's checks and installs in the inline apply's order: the
// {{.src}} checks of every staged file, up to GOMAXPROCS at a time; then
// the installs, and one run per distinct installed-file check command. An
// installed-file check and the installs it checks hold their command's
// lock, so no other flight installs a resource checked by the same command
// (the same nginx config) while it runs. land gets the jobs that are done
// all together (one reload per distinct reload_cmd for the batch, as a
// first full render needs), except the groups whose command another flight
// holds: each of those waits for it and lands apart, so a hung check never
// holds back a resource that does not share its command.
func (r *Renderer) fly(ctx context.Context, f *flight, land func([]*job)) {
	parallel(len(f.jobs), func(i int) { r.checkStaged(ctx, f.jobs[i]) })
	if r.cfg.Noop {
		r.dropStaged(f.jobs)
		land(f.jobs)
		return
	}
	done, groups, order := r.installUnchecked(f.jobs)
	var waiting []string
	for _, cmd := range order {
		if !f.tryLock(cmd) {
			waiting = append(waiting, cmd)
			continue
		}
		r.checkInstalled(ctx, cmd, groups[cmd])
		f.unlock(cmd)
		done = append(done, groups[cmd]...)
	}
	if len(done) > 0 {
		land(done)
	}
	var wg sync.WaitGroup
	for _, cmd := range waiting {
		wg.Go(func() {
			if err := f.lock(ctx, cmd); err != nil {
				r.abandon(groups[cmd], err)
			} else {
				r.checkInstalled(ctx, cmd, groups[cmd])
				f.unlock(cmd)
			}
			land(groups[cmd])
		})
	}
	wg.Wait()
}

// installUnchecked installs the jobs that no installed-file check covers
// and returns them with the others that are done (failed, or a reload
// pending only); the rest are grouped by check command, in the order first
// seen.
func (r *Renderer) installUnchecked(jobs []*job) (done []*job, groups map[string][]*job, order []string) {
	groups = map[string][]*job{}
	for _, j := range jobs {
		switch {
		case j.err != nil || j.staged == "":
		case j.checkCmd == "":
			r.installJob(j) // a failure is in j.err
		default:
			if _, ok := groups[j.checkCmd]; !ok {
				order = append(order, j.checkCmd)
			}
			groups[j.checkCmd] = append(groups[j.checkCmd], j)
			continue
		}
		done = append(done, j)
	}
	return done, groups, order
}

// dropStaged ends a --noop flight: nothing is installed or reloaded, yet
// each job that passed its {{.src}} check counts as applied.
func (r *Renderer) dropStaged(jobs []*job) {
	for _, j := range jobs {
		r.unstage(j)
		j.reloadCmd = ""
	}
}

// abandon fails jobs that never got their check command's lock (the
// renderer stops): their staged files go.
func (r *Renderer) abandon(jobs []*job, err error) {
	for _, j := range jobs {
		r.unstage(j)
		j.err = err
	}
}

// unstage removes j's staged file, if any.
func (r *Renderer) unstage(j *job) {
	if j.staged == "" {
		return
	}
	if err := os.Remove(j.staged); err != nil {
		r.log.Warn("staged file left behind", "resource", j.st.name, "err", err)
	}
	j.staged = ""
}

// tryLock takes cmd's lock if no other flight holds it.
func (f *flight) tryLock(cmd string) bool {
	l := f.locks[cmd]
	if l == nil {
		return true
	}
	select {
	case l <- struct{}{}:
		return true
	default:
		return false
	}
}

// lock waits for cmd's lock, or for ctx.
func (f *flight) lock(ctx context.Context, cmd string) error {
	l := f.locks[cmd]
	if l == nil {
		return nil
	}
	select {
	case l <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("check %q: %w", cmd, context.Cause(ctx))
	}
}

func (f *flight) unlock(cmd string) {
	if l := f.locks[cmd]; l != nil {
		<-l
	}
}

// parallel calls fn(0..n-1) on up to GOMAXPROCS goroutines and returns
// when all returned.
func parallel(n int, fn func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		for i := range n {
			fn(i)
		}
		return
	}
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				fn(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// reloads is how many reloads f's batch expects: one per distinct
// reload_cmd (fewer when checks fail).
func (f *flight) reloads() int {
	cmds := map[string]bool{}
	for _, j := range f.jobs {
		if j.reloadCmd != "" {
			cmds[j.reloadCmd] = true
		}
	}
	return len(cmds)
}
