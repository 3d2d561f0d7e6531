package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rollcall/rollcall/internal/proc"
)

// startProc runs args (internal/proc: its own process group) with stdout
// and stderr in dir/<name>.log, killed with the harness so an interrupted
// run leaves nothing behind.
func startProc(dir, name string, args ...string) (*proc.Proc, error) {
	return proc.Start(proc.Spec{Name: name, Args: args, Log: filepath.Join(dir, name+".log"), DieWithParent: true})
}

// stop sends SIGTERM, waits up to grace, then kills the process group; a
// process that had to be killed, or exited non-zero, is said on stderr.
func stop(p *proc.Proc, grace time.Duration) {
	if err := p.Stop(syscall.SIGTERM, grace); err != nil {
		note("stop "+p.Name+" (log "+p.Log+")", err)
	}
}

// note says on stderr that err happened, if it did: a cleanup that failed
// changes no figure, but the operator should know.
func note(what string, err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %s: %v\n", what, err)
	}
}

// readBody reads and closes resp's body.
func readBody(resp *http.Response) ([]byte, error) {
	b, err := io.ReadAll(resp.Body)
	return b, errors.Join(err, resp.Body.Close())
}

// tail is the end of p's log, for error messages.
func tail(p *proc.Proc) string { return p.Tail(20) }

// cpuTicks is utime+stime of pid in clock ticks (/proc/<pid>/stat).
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// comm may hold spaces: fields start after the last ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return ut + st, nil
}

// clockTick is USER_HZ, 100 on every Linux the harness runs on.
const clockTick = 100

// cpuMeter measures the CPU a process uses over a window, as a share of
// one core.
type cpuMeter struct {
	pid   int
	ticks int64
	t0    time.Time
}

func startCPU(pid int) (*cpuMeter, error) {
	t, err := cpuTicks(pid)
	return &cpuMeter{pid: pid, ticks: t, t0: time.Now()}, err
}

// share is the CPU used since start, in percent of one core.
func (m *cpuMeter) share() (float64, error) {
	t, err := cpuTicks(m.pid)
	if err != nil {
		return 0, err
	}
	secs := float64(t-m.ticks) / clockTick
	return 100 * secs / time.Since(m.t0).Seconds(), nil
}

// rssBytes is VmRSS (or another field, e.g. VmHWM) of pid.
func rssBytes(pid int, field string) (float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}

// poll calls cond every interval until it returns nil, or fails with its
// last error once timeout has passed or ctx ends.
func poll(ctx context.Context, timeout, interval time.Duration, what string, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s after %v: %w", what, timeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-time.After(interval):
		}
	}
}

// waitServes waits until a GET of url on a fresh connection answers the
// body want (a server's generation marker), failing at once if p exits.
func waitServes(ctx context.Context, p *proc.Proc, url, want string) error {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	return poll(ctx, 10*time.Second, 2*time.Millisecond, p.Name+" serves generation "+want, func() error {
		if !p.Running() {
			return fmt.Errorf("%s exited: %s", p.Name, tail(p))
		}
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		b, err := readBody(resp)
		if err != nil {
			return err
		}
		if string(b) != want {
			return fmt.Errorf("got %q", b)
		}
		return nil
	})
}
