package nginxreload

// HAProxy's half of the package: the same promise as for nginx ("the new
// configuration is being served"), kept through HAProxy's master CLI
// instead of /proc. In master-worker mode a reload re-executes the master,
// which parses the configuration again and forks a new worker generation
// only when it loaded; a configuration it cannot apply (a bind on a port in
// use) leaves the old workers running and the master's `show proc` line
// says "[failed: N]". While the master re-executes (about 50-600 ms) its
// socket refuses connections, and a reload signalled then is lost: so the
// sender here resends a reload the master never started, and a confirmation
// without a sender (the renderer's, after `systemctl reload haproxy`) reports
// it as dropped, to be retried.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultMasterSocket is where Debian's haproxy.service puts the master CLI
// (-S /run/haproxy-master.sock).
const DefaultMasterSocket = "/run/haproxy-master.sock"

// DefaultResend is how long a reload may go unnoticed by the master (its
// reload count unchanged) before it counts as dropped.
const DefaultResend = 2 * time.Second

// HAProxyConfig says how to reach the HAProxy master.
type HAProxyConfig struct {
	MasterSocket string        // the master CLI (-S); DefaultMasterSocket when empty
	Timeout      time.Duration // bounds the whole reload; DefaultTimeout when zero
	Resend       time.Duration // see DefaultResend; used when zero
}

func (c HAProxyConfig) withDefaults() HAProxyConfig {
	if c.MasterSocket == "" {
		c.MasterSocket = DefaultMasterSocket
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Resend <= 0 {
		c.Resend = DefaultResend
	}
	return c
}

// Procs is the master CLI's `show proc`.
type Procs struct {
	Master  int
	Reloads int   // reloads since the master started
	Failed  int   // failed reloads since the last good one
	Workers []int // the current generation, sorted
	Old     []int // old workers still finishing their connections, sorted
}

// ShowProc asks the master CLI at socket for `show proc`.
func ShowProc(ctx context.Context, socket string) (Procs, error) {
	out, err := CLI(ctx, socket, "show proc")
	if err != nil {
		return Procs{}, err
	}
	return parseShowProc(out)
}

// parseShowProc parses HAProxy 2.6's `show proc`:
//
//	#<PID>   <type>   <reloads>        <uptime>      <version>
//	12679    master   2 [failed: 1]    0d00h10m23s   2.6.12
//	# workers
//	23015    worker   1                0d00h00m12s   2.6.12
//	# old workers
//	...
//	# programs
func parseShowProc(out string) (Procs, error) {
	var p Procs
	section := "master"
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
			continue
		case strings.HasPrefix(line, "#<PID>"):
			continue
		case strings.HasPrefix(line, "#"):
			section = strings.TrimSpace(strings.TrimPrefix(line, "#"))
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 {
			return Procs{}, fmt.Errorf("show proc: line %q: want pid, type, reloads", line)
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil {
			return Procs{}, fmt.Errorf("show proc: line %q: pid: %w", line, err)
		}
		switch {
		case section == "master" && f[1] == "master":
			p.Master = pid
			if p.Reloads, err = strconv.Atoi(f[2]); err != nil {
				return Procs{}, fmt.Errorf("show proc: master line %q: reloads: %w", line, err)
			}
			if i := strings.Index(line, "[failed: "); i >= 0 {
				n, _, _ := strings.Cut(line[i+len("[failed: "):], "]")
				if p.Failed, err = strconv.Atoi(n); err != nil {
					return Procs{}, fmt.Errorf("show proc: master line %q: failed: %w", line, err)
				}
			}
		case section == "workers" && f[1] == "worker":
			p.Workers = append(p.Workers, pid)
		case section == "old workers" && f[1] == "worker":
			p.Old = append(p.Old, pid)
		}
	}
	if p.Master == 0 {
		return Procs{}, fmt.Errorf("show proc: no master line in %q", out)
	}
	slices.Sort(p.Workers)
	slices.Sort(p.Old)
	return p, nil
}

// CLI sends one command to an HAProxy CLI socket (the master's, or a
// `stats socket` of the runtime API) and returns its answer. The master
// closes the connection after answering (and, for `reload`, because it
// re-executes).
func CLI(ctx context.Context, socket, cmd string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return "", fmt.Errorf("haproxy CLI %s: %w", socket, err)
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(deadline); err != nil {
			return "", fmt.Errorf("haproxy CLI %s: %w", socket, err)
		}
	}
	if _, err := io.WriteString(conn, cmd+"\n"); err != nil {
		return "", fmt.Errorf("haproxy CLI %s: %s: %w", socket, cmd, err)
	}
	if err := conn.(*net.UnixConn).CloseWrite(); err != nil {
		return "", fmt.Errorf("haproxy CLI %s: %s: %w", socket, cmd, err)
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		return string(b), fmt.Errorf("haproxy CLI %s: %s: %w", socket, cmd, err)
	}
	return string(b), nil
}

// HAProxyResult describes an applied HAProxy reload.
type HAProxyResult struct {
	Master  int
	Old     []int // the worker generation before the reload
	New     []int // the generation running the new configuration
	Sent    int   // reloads sent (more than 1: the master dropped some)
	Lasting []int // old workers still finishing connections at the end
	Took    time.Duration
}

// HAProxyKeptOldError reports a reload HAProxy received and refused: the
// master re-executed, failed to load or apply the configuration, and kept
// the old workers.
type HAProxyKeptOldError struct {
	Master  int
	Failed  int // the master's failed reloads in a row
	Workers []int
}

func (e *HAProxyKeptOldError) Error() string {
	return fmt.Sprintf("haproxy kept the old config: master %d refused the reload (%d failed in a row; workers %v; its log says why)",
		e.Master, e.Failed, e.Workers)
}

// ErrDropped reports a reload the master never started (its reload count
// did not move): it was signalled while the master was re-executing.
var ErrDropped = errors.New("haproxy dropped the reload")

// HAProxyGeneration is the HAProxy master and its workers before a reload.
type HAProxyGeneration struct {
	c     HAProxyConfig
	procs Procs
	start time.Time
}

// ObserveHAProxy records the master's reload count and worker generation,
// waiting (within c.Timeout) while the master re-executes.
func ObserveHAProxy(ctx context.Context, c HAProxyConfig) (*HAProxyGeneration, error) {
	c = c.withDefaults()
	g := &HAProxyGeneration{c: c, start: time.Now()}
	deadline := g.start.Add(c.Timeout)
	var err error
	for {
		if g.procs, err = showProcOnce(ctx, c.MasterSocket); err == nil {
			return g, nil
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		if err := sleepCtx(ctx, poll); err != nil {
			return nil, err
		}
	}
}

// Wait waits until a worker that was not there when g was observed runs,
// then (at most settle more) until the old workers have exited. It returns
// a *HAProxyKeptOldError when the master refused the reload, and ErrDropped
// when c.Resend passes without the master starting one.
func (g *HAProxyGeneration) Wait(ctx context.Context) (HAProxyResult, error) {
	return g.wait(ctx, nil)
}

// ReloadHAProxy reloads HAProxy through the master CLI and waits until a new
// worker generation runs, resending a reload the master dropped.
func ReloadHAProxy(ctx context.Context, c HAProxyConfig) (HAProxyResult, error) {
	g, err := ObserveHAProxy(ctx, c)
	if err != nil {
		return HAProxyResult{}, err
	}
	sent := 0
	send := func() error {
		sent++
		return g.send(ctx)
	}
	if err := send(); err != nil {
		return HAProxyResult{}, err
	}
	res, err := g.wait(ctx, send)
	res.Sent = sent
	return res, err
}

// send writes `reload` to the master CLI, retrying while the socket
// refuses connections (the master re-executing), within the timeout.
func (g *HAProxyGeneration) send(ctx context.Context) error {
	deadline := g.start.Add(g.c.Timeout)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := CLI(cctx, g.c.MasterSocket, "reload")
		cancel()
		// The master re-executes at once: a reset or a short read is the
		// reload being taken, not an error.
		var op *net.OpError
		if err == nil || errors.As(err, &op) && op.Op == "read" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("send reload: %w", err)
		}
		if err := sleepCtx(ctx, poll); err != nil {
			return err
		}
	}
}

// wait is Wait; resend, when set, is called instead of returning ErrDropped.
func (g *HAProxyGeneration) wait(ctx context.Context, resend func() error) (HAProxyResult, error) {
	before := g.procs
	res := HAProxyResult{Master: before.Master, Old: before.Workers}
	deadline := time.Now().Add(g.c.Timeout)
	sentAt := time.Now()
	var appliedAt time.Time
	var last error
	for {
		p, err := showProcOnce(ctx, g.c.MasterSocket)
		now := time.Now()
		switch {
		case err != nil:
			last = err // re-executing: the socket refuses for a while
		case res.New == nil && len(without(p.Workers, before.Workers)) > 0:
			res.New, appliedAt = without(p.Workers, before.Workers), now
		case res.New == nil && p.Reloads > before.Reloads && p.Failed > 0:
			return res, &HAProxyKeptOldError{Master: p.Master, Failed: p.Failed, Workers: p.Workers}
		case res.New == nil && p.Reloads == before.Reloads && now.Sub(sentAt) > g.c.Resend:
			if resend == nil {
				return res, fmt.Errorf("%w: master %d's reload count stayed %d for %v", ErrDropped, p.Master, p.Reloads, g.c.Resend)
			}
			if err := resend(); err != nil {
				return res, err
			}
			sentAt = time.Now()
		}
		if res.New != nil && err == nil {
			// An old worker still serves, with the old configuration, the
			// requests on connections it accepted: wait for it to exit,
			// bounded by settle (long-lived connections may hold it).
			res.Lasting = intersect(append(slices.Clone(p.Workers), p.Old...), slices.Sorted(slices.Values(before.Workers)))
			if len(res.Lasting) == 0 || now.Sub(appliedAt) >= settle || now.After(deadline) {
				res.Took = time.Since(g.start)
				return res, nil
			}
		}
		if res.New == nil && now.After(deadline) {
			return res, fmt.Errorf("haproxy kept the old config: no new worker within %v (last error: %v)", g.c.Timeout, last)
		}
		if err := sleepCtx(ctx, poll); err != nil {
			return res, fmt.Errorf("wait for haproxy workers: %w", err)
		}
	}
}

// showProcOnce is ShowProc bounded by one second.
func showProcOnce(ctx context.Context, socket string) (Procs, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return ShowProc(ctx, socket)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
