package renderer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rollcall/rollcall/renderer/confd"
)

// resState is the runtime state of one loaded resource (the Resource itself
// stays immutable).
type resState struct {
	res           *confd.Resource
	name          string // metrics label and log key: the .toml file name
	prefixes      []string
	reloadPending bool     // installed, but its reload has not succeeded yet
	unconfirmed   bool     // its pending mark is on disk (stage.go): dest may not be checked or reloaded
	known         []string // service dirs its typed `services` returned: kept when their last key goes
	onDisk        int      // instances recorded next to dest (stage.go instancesFile); -1 = none
}

// job is one resource's way through a batch. Its checks, install and
// rollback run apart from the loop (flight.go): what they need of the
// loop's state is copied in when the job leaves the loop (board) and
// handed back when it lands (landed).
type job struct {
	st        *resState
	cur, want fileState
	staged    string // temp file in dest's dir, until installed
	installed bool
	checkCmd  string        // a check_cmd without {{.src}}, expanded: it checks the installed file; "" = none
	reloadCmd string        // expanded; "" = none
	checkTook time.Duration // its {{.src}} check_cmd's run
	err       error

	marked     bool      // dest's pending mark is on disk (resState.unconfirmed)
	onDisk     int       // resState.onDisk
	cand, base int       // the guard's Candidate and Base instances; -1 = unknown
	since      time.Time // the scheduler's Since: when its oldest unapplied change arrived
}

// batchResult says how a batch went.
type batchResult struct {
	ok, failed []*resState
	reloads    []*reloadGroup // installed and checked; their reloads are yet to run
}

// apply applies one batch of resources at snap on the caller, checks
// included (--onetime, and tests without the loop), and returns their
// reloads to run (runReloads). The loop runs the same steps, but with its
// pushes, checks and installs apart (begin, then pushlane.go and
// flight.go).
func (r *Renderer) apply(ctx context.Context, snap *snapshot, sts []*resState) batchResult {
	res, f := r.begin(ctx, snap, sts)
	var mu sync.Mutex
	var jobs []*job
	r.fly(ctx, f, func(js []*job) {
		mu.Lock()
		defer mu.Unlock()
		jobs = append(jobs, js...)
	})
	r.landed(f.rev, jobs, &res)
	return res
}

// begin is the part of a batch at snap that runs on the loop: pushed peer
// sets (sent apart, pushlane.go, when there is a loop), renders and
// staging. Resources whose output is already installed
// (and applied: no pending mark) cost nothing; failed renders are settled
// here. The rest come back as a flight whose checks and installs run apart
// (flight.go); they share one check per distinct no-{{.src}} check_cmd and
// one reload per distinct reload_cmd. A failing resource is logged with
// the command output, counted, and left out; the others apply.
func (r *Renderer) begin(ctx context.Context, snap *snapshot, sts []*resState) (batchResult, *flight) {
	var res batchResult
	f := &flight{rev: snap.rev}
	// Pushed peer sets first: an app that appears has its peers in nginx
	// before the reload that adds its upstream. The loop sends them apart
	// and the batch's flight waits for them (pushlane.go).
	if r.lanes == nil {
		sts = r.applyPushes(ctx, snap, sts, &res)
	} else {
		sts, f.pushes, f.after = r.lanes.pushAll(ctx, snap, sts, &res)
	}
	f.jobs = r.prepareJobs(ctx, snap, sts, &res)
	return res, f
}

// prepareJobs renders and stages every resource; failures and unchanged
// files are settled here, and the rest board their flight.
func (r *Renderer) prepareJobs(ctx context.Context, snap *snapshot, sts []*resState, res *batchResult) []*job {
	var jobs []*job
	for _, j := range r.prepareAll(ctx, snap, sts) {
		st := j.st
		switch {
		case j.err != nil:
			r.fail(res, j)
		case j.staged == "" && !st.reloadPending:
			r.succeed(res, st, snap.rev) // unchanged
		default:
			r.board(j)
			jobs = append(jobs, j)
		}
	}
	return jobs
}

// board copies into j what its install and rollback need of the loop's
// state.
func (r *Renderer) board(j *job) {
	id := j.st.res.Path
	j.marked, j.onDisk, j.since = j.st.unconfirmed, j.st.onDisk, r.sched.Since(id)
	j.cand, j.base = -1, -1
	if n, ok := r.guard.Candidate(id); ok {
		j.cand = n
	}
	if n, ok := r.guard.Base(id); ok {
		j.base = n
	}
}

// landed takes jobs back on the loop once their flight is done with them:
// their state first (to the resource now loaded at their path: the
// configuration may have been reloaded meanwhile), then how each went:
// failed, applied (no reload_cmd), or one reload per distinct reload_cmd.
func (r *Renderer) landed(rev int64, jobs []*job, res *batchResult) {
	for _, j := range jobs {
		if cur := r.byID[j.st.res.Path]; cur != nil && cur.res.Dest == j.st.res.Dest {
			j.st = cur
		}
		j.st.unconfirmed = j.st.unconfirmed || j.marked
		j.st.onDisk = j.onDisk
		if j.err != nil {
			r.fail(res, j)
		}
	}
	res.reloads = append(res.reloads, r.groupReloads(rev, jobs, res)...)
}

// groupReloads gathers one reload per distinct reload_cmd among what is
// now in place: the caller runs them (runReloads inline, or apart in
// lanes). Jobs without a reload_cmd are applied already.
func (r *Renderer) groupReloads(rev int64, jobs []*job, res *batchResult) []*reloadGroup {
	var groups []*reloadGroup
	byCmd := map[string]*reloadGroup{}
	for _, j := range jobs {
		if j.err != nil {
			continue
		}
		if j.reloadCmd == "" {
			r.succeed(res, j.st, rev)
			continue
		}
		j.st.reloadPending = true
		g := byCmd[j.reloadCmd]
		if g == nil {
			g = &reloadGroup{cmd: j.reloadCmd}
			byCmd[j.reloadCmd] = g
			groups = append(groups, g)
		}
		g.items = append(g.items, reloadItem{st: j.st, rev: rev})
	}
	return groups
}

// reloadGroup is the resources one reload_cmd applies.
type reloadGroup struct {
	cmd   string
	items []reloadItem
}

// reloadItem is a resource installed at rev whose reload is pending.
type reloadItem struct {
	st  *resState
	rev int64
}

func (g *reloadGroup) names() string {
	ns := make([]string, 0, len(g.items))
	for _, it := range g.items {
		ns = append(ns, it.st.name)
	}
	slices.Sort(ns)
	return strings.Join(slices.Compact(ns), ",")
}

// runReload runs a group's reload_cmd, counts and logs it. It touches no
// resource state, so it may run off the loop (lanes.go).
func (r *Renderer) runReload(ctx context.Context, g *reloadGroup) error {
	start := time.Now()
	out, err := r.reload(ctx, g.cmd) // confirm.go: confirms an nginx reload
	took := time.Since(start)
	if err != nil {
		r.m.reloads.WithLabelValues("failure").Inc()
		return &CheckError{Resource: g.names(), Kind: "reload", Cmd: g.cmd, Output: out, Err: err}
	}
	r.m.reloads.WithLabelValues("ok").Inc()
	r.m.lastReloadSuccess.SetToCurrentTime()
	r.log.Info("reloaded", "resource", g.names(), "took", took)
	return nil
}

// reloaded records how a group's reload went, on the loop: ok and failed
// resources for the caller's bookkeeping.
func (r *Renderer) reloaded(g *reloadGroup, err error) (ok, failed []reloadItem) {
	for _, it := range g.items {
		if err != nil {
			r.log.Error("resource not applied", "resource", it.st.name, "dest", it.st.res.Dest, "err", err)
			failed = append(failed, it)
			continue
		}
		it.st.reloadPending = false
		r.m.lastApplySuccess.WithLabelValues(it.st.name).SetToCurrentTime()
		ok = append(ok, it)
	}
	return ok, failed
}

// runReloads runs a batch's reloads in turn on the caller (--onetime) and
// folds them into res.
func (r *Renderer) runReloads(ctx context.Context, res *batchResult) {
	for _, g := range res.reloads {
		ok, failed := r.reloaded(g, r.runReload(ctx, g))
		for _, it := range ok {
			res.ok = append(res.ok, it.st)
		}
		for _, it := range failed {
			res.failed = append(res.failed, it.st)
		}
	}
	res.reloads = nil
}

// prepare renders a resource and, when its output differs from the
// installed file, stages it; its checks run later, apart (flight.go).
func (r *Renderer) prepare(ctx context.Context, snap *snapshot, st *resState) *job {
	rs := st.res
	j := &job{st: st}
	out, err := rs.RenderKnown(ctx, snap.For(st.prefixes), st.known)
	if len(out.Services) > 0 {
		st.known = slices.Compact(slices.Sorted(slices.Values(slices.Concat(st.known, out.Services))))
	}
	if err != nil {
		r.m.renders.WithLabelValues(st.name, "error").Inc()
		j.err = fmt.Errorf("render %s: %w", rs.Dest, err)
		return j
	}
	r.gate.skippedAll(out.Skipped)
	if j.cur, err = readState(rs.Dest); err != nil {
		j.err = err
		return j
	}
	j.want = target(rs, out.Bytes, j.cur)
	if rs.ReloadCmd != "" {
		if j.reloadCmd, err = expandCmd(rs.ReloadCmd, rs.Src, rs.Dest); err != nil {
			j.err = err
			return j
		}
	}
	if j.cur.same(j.want) && !st.unconfirmed {
		r.m.renders.WithLabelValues(st.name, "unchanged").Inc()
		return j
	}
	r.m.renders.WithLabelValues(st.name, "ok").Inc()
	if c := rs.CheckCmd; c != "" && !usesSrc(c) {
		if r.cfg.Noop {
			r.log.Info("noop: check_cmd without {{.src}} needs the file installed, not run", "resource", st.name)
		} else if j.checkCmd, err = expandCmd(c, "", rs.Dest); err != nil {
			j.err = err
			return j
		}
	}
	if j.staged, err = stageFile(rs.Dest, j.want); err != nil {
		j.err = err
		return j
	}
	if r.cfg.Noop {
		r.printDiff(ctx, rs.Dest, j.cur, j.staged)
	}
	return j
}

// checkStaged runs j's check_cmd with {{.src}}, if it has one, on its
// staged file; a rejected file is removed. It runs apart from the loop.
func (r *Renderer) checkStaged(ctx context.Context, j *job) {
	c := j.st.res.CheckCmd
	if j.staged == "" || c == "" || !usesSrc(c) {
		return
	}
	cmd, err := expandCmd(c, j.staged, j.st.res.Dest)
	if err == nil {
		start := time.Now()
		err = r.check(ctx, j.st.name, cmd)
		j.checkTook = time.Since(start)
	}
	if err != nil {
		r.unstage(j)
		j.err = err
	}
}

// check runs one check_cmd and counts it for resource name.
func (r *Renderer) check(ctx context.Context, name, cmd string) error {
	out, err := r.runCmd(ctx, "check", cmd)
	if err != nil {
		r.m.checks.WithLabelValues(name, "failure").Inc()
		return &CheckError{Resource: name, Kind: "check", Cmd: cmd, Output: out, Err: err}
	}
	r.m.checks.WithLabelValues(name, "ok").Inc()
	return nil
}

// checkInstalled installs group and runs their shared whole-config check
// once. If it fails and several resources share it, each is tried alone so
// one bad resource never holds back the others; failures are rolled back
// before anything reloads. It runs apart from the loop, holding cmd's lock
// (flight.go).
func (r *Renderer) checkInstalled(ctx context.Context, cmd string, group []*job) {
	var installed []*job
	for _, j := range group {
		if r.installJob(j) == nil {
			installed = append(installed, j)
		}
	}
	if len(installed) == 0 {
		return
	}
	err := r.checkGroup(ctx, cmd, installed)
	if err == nil {
		return
	}
	for _, j := range installed {
		r.rollback(j)
	}
	if len(installed) == 1 {
		installed[0].err = err
		return
	}
	r.log.Warn("shared check failed, checking resources one by one", "resource", names(installed), "err", err)
	for _, j := range installed {
		if j.staged, j.err = stageFile(j.st.res.Dest, j.want); j.err == nil {
			j.err = r.installJob(j)
		}
		if j.err == nil {
			if j.err = r.checkGroup(ctx, cmd, []*job{j}); j.err != nil {
				r.rollback(j)
			}
		}
	}
}

func (r *Renderer) checkGroup(ctx context.Context, cmd string, group []*job) error {
	out, err := r.runCmd(ctx, "check", cmd)
	result := "ok"
	if err != nil {
		result = "failure"
	}
	for _, j := range group {
		r.m.checks.WithLabelValues(j.st.name, result).Inc()
	}
	if err != nil {
		return &CheckError{Resource: names(group), Kind: "check", Cmd: cmd, Output: out, Err: err}
	}
	return nil
}

// observeInstall records how long the change j applies took to be
// installed, without its own check (resources without a change since the
// last apply, as in a full pass, are not observed).
func (r *Renderer) observeInstall(j *job) {
	if !j.since.IsZero() {
		r.m.changeToInstall.Observe((time.Since(j.since) - j.checkTook).Seconds())
		j.since = time.Time{} // once: not again when it is tried alone
	}
}

// installJob installs j's staged file after its pending mark. It touches
// only j and files: it runs apart from the loop.
func (r *Renderer) installJob(j *job) error {
	if !j.marked {
		if err := markPending(j.st.res.Dest); err != nil {
			os.Remove(j.staged)
			j.staged, j.err = "", err
			return err
		}
		j.marked = true
	}
	err := install(j.staged, j.st.res.Dest)
	j.staged = ""
	if err != nil {
		j.err = err
		return err
	}
	j.installed = true
	r.observeInstall(j)
	r.recordInstances(j, j.cand)
	if h := r.testHookInstall; h != nil {
		h(j.st.res.Dest)
	}
	return nil
}

// rollback restores the previous file of an installed job.
func (r *Renderer) rollback(j *job) {
	if !j.installed {
		return
	}
	if err := restore(j.st.res.Dest, j.cur); err != nil {
		r.log.Error("roll back failed: the rejected file stays installed", "resource", j.st.name, "dest", j.st.res.Dest, "err", err)
		return
	}
	j.installed = false
	r.recordInstances(j, j.base)
	r.log.Info("rolled back", "resource", j.st.name, "dest", j.st.res.Dest)
}

// runCmd runs a command with the configured timeout, timing it.
func (r *Renderer) runCmd(ctx context.Context, kind, cmd string) (string, error) {
	start := time.Now()
	out, err := runCommand(ctx, cmd, r.cfg.CommandTimeout)
	took := time.Since(start)
	r.m.commandDuration.WithLabelValues(kind).Observe(took.Seconds())
	if errors.Is(err, errTimedOut) {
		r.m.commandTimeouts.WithLabelValues(kind).Inc()
	}
	if err == nil && strings.TrimSpace(out) != "" {
		// nginx warns on stderr even when it succeeds: say what it said.
		r.log.Info("command output", "kind", kind, "cmd", cmd, "took", took, "output", out)
	} else {
		r.log.Debug("command ran", "kind", kind, "cmd", cmd, "took", took, "output", out, "err", err)
	}
	return out, err
}

// recover cleans up after a renderer killed while applying st: stale stage
// files go, and a pending mark makes st apply in full at its first pass.
func (r *Renderer) recover(st *resState) bool {
	if r.cfg.Noop {
		return false
	}
	st.onDisk = -1
	if n, ok := readInstances(st.res.Dest); ok {
		r.guard.Seed(st.res.Path, n)
		st.onDisk = n
	}
	pending, removed, err := leftovers(st.res.Dest)
	for _, p := range removed {
		r.log.Info("removed a stale stage file", "resource", st.name, "file", p)
	}
	if err != nil {
		r.log.Error("cleaning up after a crash", "resource", st.name, "err", err)
	}
	if pending {
		r.log.Warn("installed file may not have been checked or reloaded: checking and reloading it", "resource", st.name, "dest", st.res.Dest)
	}
	return pending
}

// recordInstances notes next to j's dest how many instances (n; < 0 =
// unknown) the installed file holds, for the guard of a renderer started
// later.
func (r *Renderer) recordInstances(j *job, n int) {
	if n < 0 || n == j.onDisk {
		return
	}
	if err := writeInstances(j.st.res.Dest, n); err != nil {
		r.log.Warn("the guard will not know this file after a restart", "resource", j.st.name, "err", err)
		return
	}
	j.onDisk = n
}

func (r *Renderer) succeed(res *batchResult, st *resState, rev int64) {
	r.m.lastApplySuccess.WithLabelValues(st.name).SetToCurrentTime()
	res.ok = append(res.ok, st)
}

func (r *Renderer) fail(res *batchResult, j *job) {
	res.failed = append(res.failed, j.st)
	r.log.Error("resource not applied", "resource", j.st.name, "dest", j.st.res.Dest, "err", j.err)
}

func names(group []*job) string {
	ns := make([]string, 0, len(group))
	for _, j := range group {
		ns = append(ns, j.st.name)
	}
	slices.Sort(ns)
	return strings.Join(slices.Compact(ns), ",")
}

// printDiff writes a unified diff of the installed file against the staged
// one (diff -u from diffutils).
func (r *Renderer) printDiff(ctx context.Context, dest string, cur fileState, staged string) {
	old := dest
	if !cur.exists {
		old = os.DevNull
	}
	cmd := exec.CommandContext(ctx, "diff", "-u", "--label", dest, "--label", dest+" (new)", old, staged)
	out, err := cmd.Output()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
		r.log.Error("diff", "dest", dest, "err", err)
		return
	}
	if len(out) == 0 && cur.exists {
		fmt.Fprintf(r.stdout, "# %s: mode or owner changes (%v %d:%d)\n", dest, cur.mode, cur.uid, cur.gid)
		return
	}
	fmt.Fprintf(r.stdout, "%s", out)
}

// prepareAll prepares sts with up to GOMAXPROCS at a time (a full render
// of a resource per app renders and stages every resource), in order.
// --noop prints diffs: one at a time.
func (r *Renderer) prepareAll(ctx context.Context, snap *snapshot, sts []*resState) []*job {
	jobs := make([]*job, len(sts))
	prep := func(i int) { jobs[i] = r.prepare(ctx, snap, sts[i]) }
	if r.cfg.Noop {
		for i := range sts {
			prep(i)
		}
		return jobs
	}
	parallel(len(sts), prep)
	return jobs
}
