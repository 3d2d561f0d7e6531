// Command bench is rollcall's load harness (`make bench`): it runs the
// binaries `make build` ships against a real etcd (embedded, in a process of
// its own), a real nginx (private prefix, free loopback port) and in-process
// backends, prints one table of the figures users compare — median and
// worst of several runs — and writes it with the machine it ran on to
// bench/RESULTS.md. See bench/README.md for what each row measures.
//
//	bench [--runs 3] [--quick] [--idle 60s] [--only small,scale,registrar,etcd] ...
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/rollcall/rollcall/internal/nginxconf"
)

type options struct {
	bin, templates, nginx, out, work string
	haproxy, haproxyDir              string // the haproxy binary, the shipped haproxy/ confdir
	note                             string
	args                             []string // the command line, for RESULTS.md
	runs, changes                    int
	apps, perApp, scaleChanges       int
	floorRuns, regRuns, registrars   int
	plainRuns                        int
	hapRuns                          int // runs of the haproxy part
	idle, etcdWindow                 time.Duration
	balancerWindow                   time.Duration // the push part's load windows
	only                             []string
	keep, quick                      bool
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve-etcd" {
		os.Exit(serveEtcd(os.Args[2:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func parse(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{args: args}
	only := o.define(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick {
		o.quicken(set)
	}
	o.only = strings.Split(*only, ",")
	for _, p := range o.only {
		if !slices.Contains([]string{"small", "scale", "registrar", "etcd", "push", "haproxy"}, p) {
			return nil, fmt.Errorf("--only: unknown part %q", p)
		}
	}
	if o.runs < 1 || o.changes < 1 || o.apps < 1 || o.perApp < 1 || o.scaleChanges < 1 || o.floorRuns < 1 || o.regRuns < 1 || o.registrars < 1 || o.hapRuns < 1 || o.plainRuns < 0 {
		return nil, errors.New("counts must be positive")
	}
	lookup := func() (string, error) { return exec.LookPath(o.nginx) }
	if o.nginx == "nginx" {
		lookup = nginxconf.Lookup // also where Debian puts it, off a user's PATH
	}
	bin, err := lookup()
	if err != nil {
		return nil, fmt.Errorf("nginx: %w (apt-get install nginx-light)", err)
	}
	o.nginx = bin
	if o.bin, err = filepath.Abs(o.bin); err != nil {
		return nil, err
	}
	return o, nil
}

// define declares the flags on fs; it returns --only's value.
func (o *options) define(fs *flag.FlagSet) *string {
	fs.StringVar(&o.bin, "bin", "bin", "directory of the binaries make build ships")
	fs.StringVar(&o.templates, "templates", "templates", "the shipped templates")
	fs.StringVar(&o.nginx, "nginx", "nginx", "nginx binary")
	fs.StringVar(&o.haproxy, "haproxy", "haproxy", "haproxy binary (the haproxy part)")
	fs.StringVar(&o.haproxyDir, "haproxy-dir", "haproxy", "the shipped HAProxy confdir (haproxy.cfg, conf.d, templates)")
	fs.IntVar(&o.hapRuns, "haproxy-runs", 1, "runs of each HAProxy setup's rows (the haproxy part)")
	fs.StringVar(&o.out, "out", "bench/RESULTS.md", "write the table here (quick runs write only when set)")
	fs.StringVar(&o.work, "work", "", "directory for the runs' temp dirs (default $TMPDIR)")
	fs.IntVar(&o.runs, "runs", 3, "runs of the small-config rows (propagation, burst, stream)")
	fs.IntVar(&o.plainRuns, "plain-runs", 0, "small-config runs with reload_cmd = nginx -s reload (a second column; 0 = none)")
	fs.IntVar(&o.changes, "changes", 50, "add → remove cycles per propagation run")
	fs.IntVar(&o.apps, "apps", 1000, "services in the scale test")
	fs.IntVar(&o.perApp, "instances", 10, "instances per service in the scale test")
	fs.IntVar(&o.scaleChanges, "scale-changes", 20, "add → remove cycles at scale")
	fs.IntVar(&o.floorRuns, "floor-runs", 5, "nginx floor measurements per config (median)")
	fs.IntVar(&o.regRuns, "registrar-runs", 5, "registrar starts")
	fs.IntVar(&o.registrars, "registrars", 1000, "registrars' leases in the etcd load test")
	fs.DurationVar(&o.idle, "idle", 60*time.Second, "idle window for the renderer's CPU at scale")
	fs.DurationVar(&o.etcdWindow, "etcd-window", 20*time.Second, "measuring window of the etcd load test")
	fs.StringVar(&o.note, "note", "", "a line for RESULTS.md about this run (e.g. what else the machine was doing)")
	fs.DurationVar(&o.balancerWindow, "balancer-window", 0, "each load window of the push part's balancer cost (0: 10s, 2s with --quick)")
	only := fs.String("only", "small,scale,registrar,etcd,push,haproxy", "which parts to run")
	fs.BoolVar(&o.keep, "keep", false, "keep the temp dirs (logs, rendered files)")
	fs.BoolVar(&o.quick, "quick", false, "a short smoke run: 1 run, 10 changes, 100 apps, 5s idle, 100 registrars")
	return only
}

// quicken applies --quick's smaller counts to the flags not set.
func (o *options) quicken(set map[string]bool) {
	for name, v := range map[string]*int{"runs": &o.runs, "changes": &o.changes, "apps": &o.apps,
		"scale-changes": &o.scaleChanges, "floor-runs": &o.floorRuns, "registrar-runs": &o.regRuns,
		"registrars": &o.registrars, "plain-runs": &o.plainRuns, "haproxy-runs": &o.hapRuns} {
		if !set[name] {
			*v = map[string]int{"runs": 1, "changes": 10, "apps": 100, "scale-changes": 5,
				"floor-runs": 3, "registrar-runs": 2, "registrars": 100, "plain-runs": 0, "haproxy-runs": 1}[name]
		}
	}
	if !set["idle"] {
		o.idle = 5 * time.Second
	}
	if !set["etcd-window"] {
		o.etcdWindow = 5 * time.Second
	}
	if !set["out"] {
		o.out = ""
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opt, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}
	m := describeMachine(opt)
	start := time.Now()
	t := newTable()
	logf := func(format string, a ...any) {
		fmt.Fprintf(stderr, "[%6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, a...))
	}
	failed := false
	for _, p := range parts(ctx, opt, t, logf) {
		if !slices.Contains(opt.only, p.name) {
			continue
		}
		if err := p.run(); err != nil {
			fmt.Fprintf(stderr, "bench: %s: %v\n", p.name, err)
			failed = true
			if ctx.Err() != nil {
				break
			}
		}
	}
	m.took = time.Since(start)
	m.loadEnd = loadavg()
	var b bytes.Buffer
	t.write(&b)
	fmt.Fprintf(stdout, "\n%s\n%s", m.summary(), b.String())
	if opt.out != "" && !failed {
		if err := os.WriteFile(opt.out, results(opt, m, b.String()), 0o644); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		logf("wrote %s", opt.out)
	}
	if failed {
		return 1
	}
	return 0
}

// part is one --only part: its rows of t.
type part struct {
	name string
	run  func() error
}

// parts are the harness's parts, in the order they run.
func parts(ctx context.Context, opt *options, t *table, logf func(string, ...any)) []part {
	return []part{
		{"small", func() error {
			for i := range opt.runs + opt.plainRuns {
				t.alt = i >= opt.runs
				reload := map[bool]string{true: "nginx -s reload", false: "nginx-reload"}[t.alt]
				logf("small config, run %d/%d (%s): floor, %d add → remove cycles, burst, stream",
					i+1, opt.runs+opt.plainRuns, reload, opt.changes)
				if err := small(ctx, opt, t, t.alt); err != nil {
					return err
				}
			}
			t.alt = false
			return nil
		}},
		{"scale", func() error {
			for _, layout := range []string{"per-app", "all-in-one"} {
				logf("scale, %s: %d services × %d instances", layout, opt.apps, opt.perApp)
				if err := scale(ctx, opt, t, layout); err != nil {
					return fmt.Errorf("scale %s: %w", layout, err)
				}
			}
			return nil
		}},
		{"registrar", func() error {
			logf("registrar: %d starts", opt.regRuns)
			return registrarRuns(ctx, opt, t)
		}},
		{"etcd", func() error {
			logf("etcd: %d registrars' leases", opt.registrars)
			return etcdLoad(ctx, opt, t)
		}},
		{"push", func() error { return pushPart(ctx, opt, t, logf) }},
		{"haproxy", func() error { return hapPart(ctx, opt, t, logf) }},
	}
}

// small runs the small-config rows once: one resource per service for the
// probe, the stream and ten burst services.
func small(ctx context.Context, opt *options, t *table, plain bool) error {
	w, err := newWorld(ctx, opt, "small", plain)
	if err != nil {
		return err
	}
	defer w.close()
	svcs := append([]string{probeSvc, steadySvc}, burstSvcs()...)
	if err := w.perApp(svcs...); err != nil {
		return err
	}
	if _, err := w.startRenderer(ctx, 2*time.Minute); err != nil {
		return err
	}
	floorStr, err := pattern(ctx, w, t, fmt.Sprintf("small config (%d resources): ", len(svcs)), opt.changes,
		[]float64{50, 95, 99}, func(_ floor, p float64) string {
			return map[float64]string{50: "≤ 120 ms", 95: "≤ 200 ms"}[p]
		})
	if err != nil {
		return err
	}
	b, err := burst(ctx, w)
	if err != nil {
		return err
	}
	t.add("burst (200 adds + 100 removals over 10 apps): reloads", count, b.reloads).with("≤ 3", "")
	t.dur("burst: time to the final state (from the first write)", b.final).with("", floorStr)
	t.dur("burst: time the 300 writes took", b.spread).with("~1 s", "")
	r := t.add("burst: final state exactly right (files and nginx)", yesno, map[bool]float64{true: 1}[b.right])
	if !b.right {
		r.note = b.why
	}
	s, err := stream(ctx, w)
	if err != nil {
		return err
	}
	t.add("steady stream (a change every 100 ms for 10 s): reloads", count, s.reloads).with("≤ 12", "")
	t.dur("steady stream: median wait", s.p50).with("", floorStr)
	t.dur("steady stream: worst wait", s.worst).with("≤ 1.5 s", floorStr)
	return nil
}

var steadySvc = steadyApp + "_" + benchEnv
