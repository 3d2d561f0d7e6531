// Package nginxreload reloads nginx and confirms that the new configuration
// was applied.
//
// `nginx -s reload` only parses the configuration and signals the master: it
// exits 0 even when the master then fails to apply the configuration (a
// `listen` on a port in use, say), logs [emerg] and keeps serving the old one.
// The master starts a new generation of worker processes only when the new
// configuration is in effect, so Reload records the master's children
// (/proc/<pid>/stat ppid), sends the reload, and waits until a child that was
// not there before appears (applied) or the timeout passes with only the old
// ones (kept the old configuration). An [emerg] line written to the error log
// after the signal ends the wait early. Once new workers run, it also waits
// (within the same timeout) until the old workers stopped accepting
// connections: until then a new connection may still meet the old
// configuration.
//
// nginx's master quits the old workers only 100 ms after it started the new
// ones (ngx_msleep(100) in its reconfigure step), and a removed backend gets
// requests all that time. Wait does not leave them that long: as soon as a
// new child shows, it sends the old workers the graceful-shutdown signal
// (SIGQUIT, which nginx documents for single workers) itself. They close
// their listening sockets and finish the requests they hold, exactly what
// the master's own signal makes them do; connections arriving meanwhile
// wait in the listen queue, which the master and the new workers keep open,
// and are accepted by the new workers. The master's signal 100 ms later
// finds them exiting or gone and changes nothing.
//
// Reload is Observe (the generation before), send, Generation.Wait. A caller
// that sends the reload its own way — the renderer running a reload_cmd such
// as `systemctl reload nginx` — calls Observe before and Wait after it.
//
// A worker that crashes and is respawned by the master during the wait also
// looks like a new generation; nginx logs such crashes ([alert] ... exited on
// signal), and they are rare enough not to matter for a reload check. Run one
// reload at a time: the workers of a reload still being applied when Reload
// starts would count as the new generation of this one.
package nginxreload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Defaults for the zero values of Config.
const (
	DefaultPIDFile = "/run/nginx.pid"
	DefaultTimeout = 10 * time.Second
)

// Config says how to reach nginx.
type Config struct {
	// Nginx is the binary run as "<Nginx> <Args...> -s reload". Empty sends
	// SIGHUP to the master from PIDFile instead.
	Nginx    string
	Args     []string // e.g. -p PREFIX -c CONF; must point at the same master as PIDFile
	PIDFile  string   // the master's pid file; DefaultPIDFile when empty
	ErrorLog string   // optional: nginx's error log, quoted on failure
	// Timeout bounds the reload command and the wait for new workers;
	// DefaultTimeout when zero.
	Timeout time.Duration
	ProcDir string // "/proc" when empty; tests point it elsewhere
}

// Result describes an applied reload.
type Result struct {
	Master int
	Old    []int // the master's children before the reload
	New    []int // children that appeared after it
	// Accepting are old children still not retired at the deadline (the
	// reload applied, but they may take new connections a while longer).
	Accepting []int
	// Quit are the old children Wait told to quit once the new ones ran;
	// QuitErr says why it could not tell some (then the master does, 100 ms
	// after starting the new workers).
	Quit    []int
	QuitErr error
	Took    time.Duration
}

// KeptOldError reports a reload nginx accepted but did not apply.
type KeptOldError struct {
	Master  int
	Workers []int // the master's children when the wait ended
	Waited  time.Duration
	Emerg   []string // [emerg] lines from the error log after the signal
}

func (e *KeptOldError) Error() string {
	msg := fmt.Sprintf("nginx kept the old config: master %d started no new workers within %v (workers %v)",
		e.Master, e.Waited.Round(time.Millisecond), e.Workers)
	if len(e.Emerg) > 0 {
		msg += ": " + strings.Join(e.Emerg, "; ")
	}
	return msg
}

// emergGrace is how long Reload still waits for new workers after an
// [emerg] line shows up, in case another nginx process (a concurrent
// `nginx -t`) wrote it.
const emergGrace = 300 * time.Millisecond

// settle bounds the wait for retired old workers to exit.
const settle = time.Second

// poll is how often the process table and error log are read.
const poll = 10 * time.Millisecond

// Reload reloads nginx and waits until a new worker generation runs. It
// returns a *KeptOldError when nginx accepted the reload but kept the old
// configuration, and another error when the reload could not be sent.
func Reload(ctx context.Context, c Config) (Result, error) {
	g, err := Observe(c)
	if err != nil {
		return Result{}, err
	}
	if err := g.c.send(ctx, g.master); err != nil {
		return Result{}, err
	}
	return g.Wait(ctx)
}

// Generation is the nginx master and its workers as they were before a
// reload: what the reload must replace. Observe it, send the reload by any
// means (Reload's own command, or a reload_cmd such as `systemctl reload
// nginx`), then Wait.
type Generation struct {
	c      Config
	master int
	old    []int
	log    *errorLog
	start  time.Time
	listed bool // the kernel lists the master's children: cheap to poll often
}

// Observe records the master (from c.PIDFile), its current children and
// the end of the error log.
func Observe(c Config) (*Generation, error) {
	c = c.withDefaults()
	g := &Generation{c: c, start: time.Now()}
	master, err := readPID(c.PIDFile)
	if err != nil {
		return nil, err
	}
	if !alive(c.ProcDir, master) {
		return nil, fmt.Errorf("nginx master %d (from %s) is not running", master, c.PIDFile)
	}
	if g.old, g.listed, err = children(c.ProcDir, master); err != nil {
		return nil, err
	}
	g.master = master
	if c.ErrorLog != "" {
		g.log = openErrorLog(c.ErrorLog)
	}
	return g, nil
}

// Wait waits, at most c.Timeout from now, until a child that was not there
// when g was observed appears and the old children have retired. It returns
// a *KeptOldError when only the old children run at the deadline, or
// earlier when the error log shows [emerg] after the observation.
func (g *Generation) Wait(ctx context.Context) (Result, error) {
	c, master, old := g.c, g.master, g.old
	deadline := time.Now().Add(c.Timeout)
	res := Result{Master: master, Old: old}
	var emerg []string
	var emergAt, retiredAt time.Time
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return Result{}, fmt.Errorf("wait for nginx workers: %w", ctx.Err())
		case <-timer.C:
		}
		if res.New == nil { // the master's children, until the new workers show
			now, _, err := children(c.ProcDir, master)
			if err != nil {
				return Result{}, err
			}
			res.New = without(now, old)
			if res.New != nil {
				res.Quit, res.QuitErr = g.quitOld()
			}
		}
		if res.New != nil && g.retired(&res, &retiredAt, deadline) {
			res.Took = time.Since(g.start)
			return res, nil
		}
		if !alive(c.ProcDir, master) {
			return Result{}, fmt.Errorf("nginx master %d exited during reload", master)
		}
		if g.log != nil {
			if lines := g.log.emerg(); len(lines) > 0 {
				if emerg == nil {
					emergAt = time.Now()
				}
				emerg = append(emerg, lines...)
			}
		}
		t := time.Now()
		if res.New == nil && (t.After(deadline) || (emerg != nil && t.Sub(emergAt) > emergGrace)) {
			now, _, _ := children(c.ProcDir, master)
			return Result{}, &KeptOldError{Master: master, Workers: now, Waited: t.Sub(g.start), Emerg: emerg}
		}
		next := poll
		if res.New != nil || g.listed {
			next = settlePoll
		}
		timer.Reset(next)
	}
}

// settlePoll is how often the old workers are looked at once the new ones
// run: only their own /proc entries, so it is cheap to do often. It is also
// how often the master's children are listed when the kernel lists them
// (g.listed) rather than the whole process table being read.
const settlePoll = 2 * time.Millisecond

// quitOld tells the old children that are still the master's and still
// accept connections to shut down gracefully. It returns those it told.
func (g *Generation) quitOld() ([]int, error) {
	var quit []int
	var errs []error
	for _, pid := range accepting(g.c.ProcDir, g.old) {
		if !childOf(g.c.ProcDir, pid, g.master) {
			continue // exited; the pid may be another process's by now
		}
		if err := syscall.Kill(pid, syscall.SIGQUIT); err != nil {
			if !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("quit old nginx worker %d: %w", pid, err))
			}
			continue
		}
		quit = append(quit, pid)
	}
	return quit, errors.Join(errs...)
}

// retired reports whether the reload is done: the old children have retired
// and exited, or retired settle ago, or the deadline passed. A retired
// worker still serves, with the old config, the connections it accepted
// before it retired: so it waits until the old workers have exited too,
// bounded by settle (long-lived connections may hold one for
// worker_shutdown_timeout).
func (g *Generation) retired(res *Result, retiredAt *time.Time, deadline time.Time) bool {
	res.Accepting = accepting(g.c.ProcDir, g.old)
	t := time.Now()
	if res.Accepting == nil && retiredAt.IsZero() {
		*retiredAt = t
	}
	exited := !slices.ContainsFunc(g.old, func(pid int) bool { return childOf(g.c.ProcDir, pid, g.master) })
	return exited || t.After(deadline) || !retiredAt.IsZero() && t.Sub(*retiredAt) >= settle
}

func (c Config) withDefaults() Config {
	if c.PIDFile == "" {
		c.PIDFile = DefaultPIDFile
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.ProcDir == "" {
		c.ProcDir = "/proc"
	}
	return c
}

// send runs `nginx ... -s reload`, or signals the master directly.
func (c Config) send(ctx context.Context, master int) error {
	if c.Nginx == "" {
		if err := syscall.Kill(master, syscall.SIGHUP); err != nil {
			return fmt.Errorf("signal nginx master %d: %w", master, err)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	args := append(slices.Clone(c.Args), "-s", "reload")
	cmd := exec.CommandContext(ctx, c.Nginx, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// accepting returns the old children that have not retired.
func accepting(procDir string, old []int) []int {
	var out []int
	for _, pid := range old {
		if !retired(procDir, pid) {
			out = append(out, pid)
		}
	}
	return out
}

// without returns the elements of a that are not in b (both sorted).
func without(a, b []int) []int {
	var out []int
	for _, x := range a {
		if _, found := slices.BinarySearch(b, x); !found {
			out = append(out, x)
		}
	}
	return out
}

// intersect returns the elements of a that are also in b (b sorted).
func intersect(a, b []int) []int {
	var out []int
	for _, x := range a {
		if _, found := slices.BinarySearch(b, x); found {
			out = append(out, x)
		}
	}
	return out
}

// errorLog follows an nginx error log from where it ended when opened.
type errorLog struct {
	path    string
	offset  int64
	partial string
}

// maxLogRead bounds what one poll reads from the error log.
const maxLogRead = 1 << 20

func openErrorLog(path string) *errorLog {
	l := &errorLog{path: path}
	if fi, err := os.Stat(path); err == nil {
		l.offset = fi.Size()
	}
	return l
}

// emerg returns the complete [emerg] lines written since the last call. A
// log that shrank (rotated) is read from its start; read errors mean no lines.
func (l *errorLog) emerg() []string {
	f, err := os.Open(l.path)
	if err != nil {
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	if fi.Size() < l.offset {
		l.offset, l.partial = 0, ""
	}
	buf := make([]byte, min(fi.Size()-l.offset, maxLogRead))
	n, err := f.ReadAt(buf, l.offset)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil
	}
	l.offset += int64(n)
	text := l.partial + string(buf[:n])
	cut := strings.LastIndexByte(text, '\n') + 1
	l.partial = text[cut:]
	var lines []string
	for line := range strings.Lines(text[:cut]) {
		if strings.Contains(line, "[emerg]") {
			lines = append(lines, strings.TrimSpace(line))
		}
	}
	return lines
}
