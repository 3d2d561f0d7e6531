package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// machine is what the figures depend on besides the code.
type machine struct {
	cpu, mem, kernel, nginx, goVersion string
	haproxy                            string // "" when not installed
	cores                              int
	date                               time.Time
	loadStart, loadEnd                 string
	took                               time.Duration
}

func describeMachine(opt *options) *machine {
	m := &machine{cores: runtime.NumCPU(), date: time.Now().UTC(), nginx: nginxVersion(opt.nginx),
		goVersion: runtime.Version(), loadStart: loadavg()}
	if bin, err := lookHAProxy(opt.haproxy); err == nil {
		m.haproxy = ", HAProxy " + haproxyVersion(bin)
	}
	m.cpu = procField("/proc/cpuinfo", "model name")
	if kb := procField("/proc/meminfo", "MemTotal"); kb != "" {
		var n float64
		if _, err := fmt.Sscanf(kb, "%f", &n); err == nil {
			m.mem = fmt.Sprintf("%.1f GiB", n/(1<<20))
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("go", "version").Output(); err == nil {
		m.goVersion = strings.TrimSpace(string(out))
	}
	return m
}

// procField is the value of the first "name: value" line of a /proc file.
func procField(path, name string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

func (m *machine) summary() string {
	return fmt.Sprintf("- %s, %d cores, %s RAM, Linux %s\n- %s%s, %s\n- %s; the run took %v; load average %s at the start, %s at the end\n",
		m.cpu, m.cores, m.mem, m.kernel, m.nginx, m.haproxy, m.goVersion, m.date.Format("2006-01-02 15:04 UTC"),
		m.took.Round(time.Second), m.loadStart, m.loadEnd)
}

// results is bench/RESULTS.md: the machine, the settings, the table and how
// each figure is measured.
func results(opt *options, m *machine, table string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# rollcall load harness: last results\n\n")
	fmt.Fprintf(&b, "Written by `make bench` (`bin/bench %s`); what each row measures: [README.md](README.md).\n\n",
		shellJoin(opt.args))
	fmt.Fprintf(&b, "## Machine\n\n%s", m.summary())
	if opt.note != "" {
		fmt.Fprintf(&b, "\n%s\n", opt.note)
	}
	fmt.Fprintf(&b, `
Settings: %d runs of the small-config rows (%d more with `+"`nginx -s reload`"+`),
%d add → remove cycles per run; scale %d services × %d instances, %d cycles,
%v idle window; %d registrar starts; %d registrars' leases over %v; %d runs
of each HAProxy setup's rows; nginx's floor is the median of %d, HAProxy's is measured
between the cycles. The renderer runs with default settings;
reload_cmd = `+"`nginx-reload`"+` (returns once nginx runs the new workers).

## Table

%s`, opt.runs, opt.plainRuns, opt.changes, opt.apps, opt.perApp, opt.scaleChanges, opt.idle,
		opt.regRuns, opt.registrars, opt.etcdWindow, opt.hapRuns, opt.floorRuns, table)
	return []byte(b.String())
}

// shellJoin quotes the arguments that need it, so the line can be re-run.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = a
		if a == "" || strings.ContainsAny(a, " '\"$\\*?;&|<>()") {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}
