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
	reloadPending bool // installed, but its reload has not succeeded yet
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
	reloads    int
}

// apply renders, stages, checks, installs and reloads one batch of
// resources at snap. Resources whose output is already installed cost
// nothing; the rest share one check per distinct no-{{.src}} check_cmd and
// one reload per distinct reload_cmd. A failing resource is logged with the
// command output, counted, and left out; the others apply. It never returns
// an error: failures are in the result and stay pending for a retry.
func (r *Renderer) apply(ctx context.Context, snap *snapshot, sts []*resState) batchResult {
	var res batchResult
	var jobs []*job
	for _, j := range r.prepareAll(ctx, snap, sts) {
		st := j.st
		switch {
		case j.err != nil:
			r.fail(&res, j)
		case j.staged == "" && !st.reloadPending:
			r.succeed(&res, st, snap.rev) // unchanged
		default:
			jobs = append(jobs, j)
		}
	}
	if r.cfg.Noop {
		for _, j := range jobs {
			os.Remove(j.staged)
			r.succeed(&res, j.st, snap.rev)
		}
		return res
	}
	// Install, then run the whole-config checks once per distinct command.
	checks := map[string][]*job{}
	var order []string
	for _, j := range jobs {
		if j.staged == "" {
			continue // reload pending only
		}
		if err := r.installJob(j); err != nil {
			r.fail(&res, j)
			continue
		}
		r.observeInstall(j)
		if c := j.st.res.CheckCmd; c != "" && !usesSrc(c) {
			cmd, err := expandCmd(c, "", j.st.res.Dest)
			if err != nil {
				j.err = err
				r.rollback(j)
				r.fail(&res, j)
				continue
			}
			if _, ok := checks[cmd]; !ok {
				order = append(order, cmd)
			}
			checks[cmd] = append(checks[cmd], j)
		}
	}
	for _, cmd := range order {
		r.checkInstalled(ctx, cmd, checks[cmd], &res)
	}
	// One reload per distinct reload_cmd among what is now in place.
	reloads := map[string][]*job{}
	order = order[:0]
	for _, j := range jobs {
		if j.err != nil {
			continue
		}
		if j.reloadCmd == "" {
			r.succeed(&res, j.st, snap.rev)
			continue
		}
		if _, ok := reloads[j.reloadCmd]; !ok {
			order = append(order, j.reloadCmd)
		}
		reloads[j.reloadCmd] = append(reloads[j.reloadCmd], j)
	}
	for _, cmd := range order {
		group := reloads[cmd]
		start := time.Now()
		out, err := r.reload(ctx, cmd) // confirm.go: confirms an nginx reload
		took := time.Since(start)
		res.reloads++
		if err != nil {
			r.m.reloads.WithLabelValues("failure").Inc()
			ce := &CheckError{Resource: names(group), Kind: "reload", Cmd: cmd, Output: out, Err: err}
			for _, j := range group {
				j.st.reloadPending = true
				j.err = ce
				r.fail(&res, j)
			}
			continue
		}
		r.m.reloads.WithLabelValues("ok").Inc()
		r.m.lastReloadSuccess.SetToCurrentTime()
		r.log.Info("reloaded", "resource", names(group), "took", took)
		for _, j := range group {
			j.st.reloadPending = false
			r.succeed(&res, j.st, snap.rev)
		}
	}
	return res
}

// prepare renders a resource and, when its output differs from the
// installed file, stages it and runs a {{.src}} check_cmd on the staged file.
func (r *Renderer) prepare(ctx context.Context, snap *snapshot, st *resState) *job {
	rs := st.res
	j := &job{st: st}
	out, err := rs.RenderContext(ctx, snap.For(st.prefixes))
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
	if j.cur.same(j.want) {
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
			os.Remove(j.staged)
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
	err := install(j.staged, j.st.res.Dest)
	j.staged = ""
	if err != nil {
		j.err = err
		return err
	}
	j.installed = true
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
	r.log.Info("rolled back", "resource", j.st.name, "dest", j.st.res.Dest)
}

// runCmd runs a command with the configured timeout, timing it.
func (r *Renderer) runCmd(ctx context.Context, kind, cmd string) (string, error) {
	start := time.Now()
	out, err := runCommand(ctx, cmd, r.cfg.CommandTimeout)
	took := time.Since(start)
	r.m.commandDuration.WithLabelValues(kind).Observe(took.Seconds())
	if err == nil && strings.TrimSpace(out) != "" {
		// nginx warns on stderr even when it succeeds: say what it said.
		r.log.Info("command output", "kind", kind, "cmd", cmd, "took", took, "output", out)
	} else {
		r.log.Debug("command ran", "kind", kind, "cmd", cmd, "took", took, "output", out, "err", err)
	}
	return out, err
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
