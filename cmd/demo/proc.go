package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rollcall/rollcall/internal/proc"
)

// procs owns every process the demo starts (internal/proc: each in its own
// process group, so a Ctrl-C reaches only the demo, which then stops
// everything in order), with its log in the work dir; stopAll ends them.
type procs struct {
	dir  string
	list []*proc.Proc
}

func (ps *procs) start(name string, env []string, args ...string) (*proc.Proc, error) {
	p, err := proc.Start(proc.Spec{Name: name, Args: args, Env: env, Log: filepath.Join(ps.dir, name+".log")})
	if err != nil {
		return nil, err
	}
	ps.list = append(ps.list, p)
	return p, nil
}

// stopAll ends every live process: the registrars together first (each
// deregisters, drains and stops its app), then the rest in reverse start
// order (nginx too: a fast shutdown is right here). Each gets SIGTERM and up
// to grace to exit; then its process group is killed.
func (ps *procs) stopAll(grace time.Duration) {
	var regs, rest []*proc.Proc
	for i := len(ps.list) - 1; i >= 0; i-- {
		if p := ps.list[i]; strings.HasPrefix(p.Name, "registrar") {
			regs = append(regs, p)
		} else {
			rest = append(rest, p)
		}
	}
	var wg sync.WaitGroup
	for _, p := range regs {
		wg.Go(func() { stop(p, grace) })
	}
	wg.Wait()
	for _, p := range rest {
		stop(p, grace)
	}
}

// stop stops p, saying so when that was slow or not clean.
func stop(p *proc.Proc, grace time.Duration) {
	if !p.Running() {
		return
	}
	t0 := time.Now()
	err := p.Stop(syscall.SIGTERM, grace)
	if d := time.Since(t0); d > 2*time.Second || err != nil {
		fmt.Fprintf(os.Stderr, "demo: %s took %v to stop (%v; see %s)\n", p.Name, d.Round(time.Millisecond), err, p.Log)
	}
}

// tail is the end of p's output, indented, for error messages.
func tail(p *proc.Proc, n int) string {
	return "    " + strings.ReplaceAll(p.Tail(n), "\n", "\n    ")
}

var logPrefixRE = regexp.MustCompile(`^time=\S+ level=(INFO )?`)

// since is p's output from the first line containing mark on, indented,
// without slog's time and INFO level.
func since(p *proc.Proc, mark string) string {
	lines := strings.Split(strings.TrimRight(p.Output(), "\n"), "\n")
	for i, l := range lines {
		if strings.Contains(l, mark) {
			lines = lines[i:]
			break
		}
	}
	for i, l := range lines {
		lines[i] = "        " + logPrefixRE.ReplaceAllString(l, "")
	}
	return strings.Join(lines, "\n")
}
