package renderer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
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

// job is one resource's way through a batch.
type job struct {
	st        *resState
	cur, want fileState
	staged    string // temp file in dest's dir, until installed
	installed bool
	reloadCmd string        // expanded; "" = none
	checkTook time.Duration // its {{.src}} check_cmd's run
	err       error
}

// batchResult says how a batch went.
type batchResult struct {
	ok, failed []*resState
	reloads    []*reloadGroup // installed and checked; their reloads are yet to run
}

// apply renders, stages, checks and installs one batch of resources at
// snap, and returns their reloads to run (res.reloads: runReloads on the
// caller, or lanes apart from the loop). Resources whose output is already
// installed (and applied: no pending mark) cost nothing; the rest share one
// check per distinct no-{{.src}} check_cmd and one reload per distinct
// reload_cmd. A failing resource is logged with the command output,
// counted, and left out; the others apply. It never returns an error:
// failures are in the result and stay pending for a retry.
func (r *Renderer) apply(ctx context.Context, snap *snapshot, sts []*resState) batchResult {
	var res batchResult
	// Pushed peer sets first: an app that appears has its peers in nginx
	// before the reload that adds its upstream.
	sts = r.applyPushes(ctx, snap, sts, &res)
	jobs := r.prepareJobs(ctx, snap, sts, &res)
	if r.cfg.Noop {
		r.noopJobs(snap, jobs, &res)
		return res
	}
	r.installAndCheck(ctx, jobs, &res)
	res.reloads = r.groupReloads(snap, jobs, &res)
	return res
}

// prepareJobs renders and stages every resource; failures and unchanged
// files are settled here, and the rest come back as jobs to install.
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
			jobs = append(jobs, j)
		}
	}
	return jobs
}

// noopJobs drops the staged files: with noop nothing is installed or
// reloaded, yet each job counts as applied at this revision.
func (r *Renderer) noopJobs(snap *snapshot, jobs []*job, res *batchResult) {
	for _, j := range jobs {
		if err := os.Remove(j.staged); err != nil && j.staged != "" {
			r.log.Warn("noop: staged file left behind", "resource", j.st.name, "err", err)
		}
		r.succeed(res, j.st, snap.rev)
	}
}

// installAndCheck installs each staged job, then runs the whole-config
// checks once per distinct command, in the order first seen.
func (r *Renderer) installAndCheck(ctx context.Context, jobs []*job, res *batchResult) {
	checks := map[string][]*job{}
	var order []string
	for _, j := range jobs {
		if j.staged == "" {
			continue // reload pending only
		}
		if err := r.installJob(j); err != nil {
			r.fail(res, j)
			continue
		}
		r.observeInstall(j)
		if c := j.st.res.CheckCmd; c != "" && !usesSrc(c) {
			cmd, err := expandCmd(c, "", j.st.res.Dest)
			if err != nil {
				j.err = err
				r.rollback(j)
				r.fail(res, j)
				continue
			}
			if _, ok := checks[cmd]; !ok {
				order = append(order, cmd)
			}
			checks[cmd] = append(checks[cmd], j)
		}
	}
	for _, cmd := range order {
		r.checkInstalled(ctx, cmd, checks[cmd], res)
	}
}

// groupReloads gathers one reload per distinct reload_cmd among what is
// now in place: the caller runs them (runReloads inline, or apart in
// lanes). Jobs without a reload_cmd are applied already.
func (r *Renderer) groupReloads(snap *snapshot, jobs []*job, res *batchResult) []*reloadGroup {
	var groups []*reloadGroup
	byCmd := map[string]*reloadGroup{}
	for _, j := range jobs {
		if j.err != nil {
			continue
		}
		if j.reloadCmd == "" {
			r.succeed(res, j.st, snap.rev)
			continue
		}
		j.st.reloadPending = true
		g := byCmd[j.reloadCmd]
		if g == nil {
			g = &reloadGroup{cmd: j.reloadCmd}
			byCmd[j.reloadCmd] = g
			groups = append(groups, g)
		}
		g.items = append(g.items, reloadItem{st: j.st, rev: snap.rev})
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
// installed file, stages it and runs a {{.src}} check_cmd on the staged file.
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
	for _, s := range out.Skipped {
		r.gate.skipped(s.Key, s.Value, s.Err)
	}
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
	if j.staged, err = stageFile(rs.Dest, j.want); err != nil {
		j.err = err
		return j
	}
	if r.cfg.Noop {
		r.printDiff(ctx, rs.Dest, j.cur, j.staged)
	}
	if c := rs.CheckCmd; c != "" && usesSrc(c) {
		cmd, err := expandCmd(c, j.staged, rs.Dest)
		if err == nil {
			start := time.Now()
			err = r.check(ctx, st.name, cmd)
			j.checkTook = time.Since(start)
		}
		if err != nil {
			if rerr := os.Remove(j.staged); rerr != nil {
				r.log.Warn("staged file left behind", "resource", st.name, "err", rerr)
			}
			j.staged, j.err = "", err
		}
	} else if c != "" && r.cfg.Noop {
		r.log.Info("noop: check_cmd without {{.src}} needs the file installed, not run", "resource", st.name)
	}
	return j
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

// checkInstalled runs one whole-config check for jobs already installed.
// If it fails and several resources share it, each is tried alone so one
// bad resource never holds back the others; failures are rolled back before
// anything reloads.
func (r *Renderer) checkInstalled(ctx context.Context, cmd string, group []*job, res *batchResult) {
	err := r.checkGroup(ctx, cmd, group)
	if err == nil {
		return
	}
	for _, j := range group {
		r.rollback(j)
	}
	if len(group) == 1 {
		group[0].err = err
		r.fail(res, group[0])
		return
	}
	r.log.Warn("shared check failed, checking resources one by one", "resource", names(group), "err", err)
	for _, j := range group {
		if j.staged, j.err = stageFile(j.st.res.Dest, j.want); j.err == nil {
			j.err = r.installJob(j)
		}
		if j.err == nil {
			if j.err = r.checkGroup(ctx, cmd, []*job{j}); j.err != nil {
				r.rollback(j)
			}
		}
		if j.err != nil {
			r.fail(res, j)
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
	if since := r.sched.Since(j.st.res.Path); !since.IsZero() {
		r.m.changeToInstall.Observe((time.Since(since) - j.checkTook).Seconds())
	}
}

func (r *Renderer) installJob(j *job) error {
	if !j.st.unconfirmed {
		if err := markPending(j.st.res.Dest); err != nil {
			os.Remove(j.staged)
			j.staged, j.err = "", err
			return err
		}
		j.st.unconfirmed = true
	}
	err := install(j.staged, j.st.res.Dest)
	j.staged = ""
	if err != nil {
		j.err = err
		return err
	}
	j.installed = true
	if n, ok := r.guard.Candidate(j.st.res.Path); ok {
		r.recordInstances(j.st, n)
	}
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
	if n, ok := r.guard.Base(j.st.res.Path); ok {
		r.recordInstances(j.st, n)
	}
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

// recordInstances notes next to st's dest how many instances the installed
// file holds, for the guard of a renderer started later.
func (r *Renderer) recordInstances(st *resState, n int) {
	if n == st.onDisk {
		return
	}
	if err := writeInstances(st.res.Dest, n); err != nil {
		r.log.Warn("the guard will not know this file after a restart", "resource", st.name, "err", err)
		return
	}
	st.onDisk = n
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
// of a resource per app runs one {{.src}} check per resource), in order.
// --noop prints diffs: one at a time.
func (r *Renderer) prepareAll(ctx context.Context, snap *snapshot, sts []*resState) []*job {
	jobs := make([]*job, len(sts))
	workers := min(runtime.GOMAXPROCS(0), len(sts))
	if r.cfg.Noop || workers <= 1 {
		for i, st := range sts {
			jobs[i] = r.prepare(ctx, snap, st)
		}
		return jobs
	}
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				jobs[i] = r.prepare(ctx, snap, sts[i])
			}
		})
	}
	for i := range sts {
		next <- i
	}
	close(next)
	wg.Wait()
	return jobs
}
