package registrar

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/rollcall/rollcall/internal/etcdtest"
	"github.com/rollcall/rollcall/internal/waitfor"
)

// childArg as os.Args[1] turns the test binary into the test app.
const childArg = "rollcall-test-child"

// reaperArg as os.Args[1] runs the registrar as a child subreaper, the
// stand-in for PID 1: orphans in the app's tree are reparented to it.
const reaperArg = "rollcall-test-reaper"

// pid1Arg as os.Args[1] runs the exported Run, as unshare's PID 1.
const pid1Arg = "rollcall-test-pid1"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == childArg {
		os.Exit(childMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == reaperArg {
		os.Exit(reaperMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == pid1Arg {
		os.Exit(pid1Main(os.Args[2:]))
	}
	code := m.Run()
	if code == 0 && !testing.Short() {
		if left := leakedGoroutines(5 * time.Second); left != "" {
			fmt.Fprintf(os.Stderr, "goroutines left after all tests:\n%s\n", left)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines waits up to d for every goroutine but this one and the
// signal package's (started by signal.Notify, never stopped) to end, and
// returns the stacks of those that did not. etcd's testutil leak check does
// not know the signal goroutine's current name.
func leakedGoroutines(d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var left []string
		for _, g := range strings.Split(string(buf), "\n\n")[1:] {
			if !strings.Contains(g, "os/signal.loop") {
				left = append(left, g)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return strings.Join(left, "\n\n")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// childMain is the app the tests run under the registrar. Arguments are
// key=value:
//
//	out=FILE         append events: "<event> <unixnano> <detail>"
//	exit=N           exit code on SIGTERM or exit-after (default 0)
//	ready-delay=D    listen on $HOST_IP:$PORT only after D
//	no-listen=1      never listen
//	ignore-term=1    record SIGTERM, keep running
//	exit-after=D     exit by itself after D
//	kill-self=1      kill itself with SIGKILL after exit-after
//	health-file=F    /health answers 503 while F exists, else 200
//	etcd=EP keydir=D on SIGTERM record whether D<HOST_IP>-<PORT> is in etcd
//	orphan=1         double-fork a grandchild that exits after 300ms, an
//	                 orphan for the nearest subreaper to reap; then record
//	                 "orphan-reaped" once its /proc entry is gone
func childMain(args []string) int {
	opt := map[string]string{}
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		opt[k] = v
	}
	dur := func(k string) time.Duration { d, _ := time.ParseDuration(opt[k]); return d }
	code, _ := strconv.Atoi(opt["exit"])
	f, err := os.OpenFile(opt["out"], os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 99
	}
	var mu sync.Mutex
	record := func(event, detail string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(f, "%s %d %s\n", event, time.Now().UnixNano(), detail)
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGQUIT, syscall.SIGWINCH, syscall.SIGINT)
	record("pid", strconv.Itoa(os.Getpid()))
	record("env", fmt.Sprintf("PORT=%s APP_PORT=%s HOST_IP=%s ETCD_PASSWORD=%s",
		os.Getenv("PORT"), os.Getenv("APP_PORT"), os.Getenv("HOST_IP"), os.Getenv("ETCD_PASSWORD")))
	if opt["spawn"] == "1" { // the middle of the double fork
		record("orphan", strconv.Itoa(startOrphan()))
		return 0
	}
	if opt["orphan"] == "1" {
		os.StartProcess(os.Args[0], []string{os.Args[0], childArg, "out=" + opt["out"], "spawn=1"},
			&os.ProcAttr{Files: []*os.File{nil, os.Stdout, os.Stderr}})
		go func() {
			for range 200 {
				time.Sleep(50 * time.Millisecond)
				if ev, ok := (app{out: opt["out"]}).find("orphan"); ok {
					if _, err := procState(ev.detail); err != nil {
						record("orphan-reaped", ev.detail)
						return
					}
				}
			}
		}()
	}
	if opt["no-listen"] != "1" {
		time.Sleep(dur("ready-delay"))
		l, err := net.Listen("tcp", net.JoinHostPort(os.Getenv("HOST_IP"), os.Getenv("PORT")))
		if err != nil {
			record("error", err.Error())
			return 98
		}
		record("listening", l.Addr().String())
		go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := os.Stat(opt["health-file"]); opt["health-file"] != "" && err == nil {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		}))
	}
	var exitAfter <-chan time.Time
	if d := dur("exit-after"); d > 0 {
		exitAfter = time.After(d)
	}
	for {
		select {
		case <-exitAfter:
			if opt["kill-self"] == "1" {
				record("killing-self", "")
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
			record("exit", "")
			return code
		case sig := <-sigs:
			s := sig.(syscall.Signal)
			if s != syscall.SIGTERM {
				record("sig", unix.SignalName(s))
				continue
			}
			record("sigterm", "key="+keyState(opt["etcd"], opt["keydir"]))
			if opt["ignore-term"] != "1" {
				return code
			}
		}
	}
}

// keyState says whether this instance's key is in etcd right now.
func keyState(endpoint, dir string) string {
	if endpoint == "" {
		return "unchecked"
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return "error"
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, dir+os.Getenv("HOST_IP")+"-"+os.Getenv("PORT"))
	switch {
	case err != nil:
		return "error"
	case len(resp.Kvs) > 0:
		return "present"
	}
	return "absent"
}

// startOrphan starts a copy of this binary that exits after 300ms, when
// its parent is long gone: a zombie for whoever inherits it.
func startOrphan() int {
	p, err := os.StartProcess(os.Args[0], []string{os.Args[0], childArg, "out=/dev/null", "no-listen=1", "exit-after=300ms"},
		&os.ProcAttr{Files: []*os.File{nil, os.Stdout, os.Stderr}})
	if err != nil {
		return -1
	}
	return p.Pid
}

// procState is the state letter of pid ("Z" zombie), or an error once the
// process is gone.
func procState(pid string) (string, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return "", err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return f[0], nil
}

// app reads the test app's event file.
type app struct{ out string }

// event is one line of the app's file.
type event struct {
	name   string
	at     time.Time
	detail string
}

func (a app) events() []event {
	b, _ := os.ReadFile(a.out)
	var evs []event
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, " ", 3)
		if len(f) < 2 {
			continue
		}
		ns, _ := strconv.ParseInt(f[1], 10, 64)
		ev := event{name: f[0], at: time.Unix(0, ns)}
		if len(f) == 3 {
			ev.detail = f[2]
		}
		evs = append(evs, ev)
	}
	return evs
}

func (a app) find(name string) (event, bool) {
	for _, ev := range a.events() {
		if ev.name == name {
			return ev, true
		}
	}
	return event{}, false
}

func (a app) wait(t *testing.T, name string, timeout time.Duration) event {
	t.Helper()
	var ev event
	waitfor.Cond(t, timeout, "app event "+name, func() error {
		var ok bool
		if ev, ok = a.find(name); !ok {
			return fmt.Errorf("events so far: %v", a.events())
		}
		return nil
	})
	return ev
}

// env returns the value of name in the app's "env" event.
func (a app) env(t *testing.T, name string) string {
	t.Helper()
	ev := a.wait(t, "env", 10*time.Second)
	for _, kv := range strings.Fields(ev.detail) {
		if k, v, _ := strings.Cut(kv, "="); k == name {
			return v
		}
	}
	return ""
}

// logBuf keeps what the registrar logged, for conditions on transitions.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) has(s string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !strings.Contains(l.b.String(), s) {
		return fmt.Errorf("no %q logged yet", s)
	}
	return nil
}

// harness is one test's etcd, client and log.
type harness struct {
	t    *testing.T
	etcd *etcdtest.Server
	cli  *clientv3.Client
	logs *logBuf
	log  *slog.Logger
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	if testing.Short() {
		t.Skip("starts etcd and child processes")
	}
	t.Parallel()
	s := etcdtest.Start(t)
	h := &harness{t: t, etcd: s, cli: s.Client(t), logs: &logBuf{}}
	h.log = slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), h.logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	return h
}

// reconnect replaces the test's client after an etcd restart: an old one
// may sit in gRPC's reconnect backoff (up to 120s) and measure that, not
// the registrar.
func (h *harness) reconnect() {
	h.cli.Close()
	h.cli = h.etcd.Client(h.t)
}

const testTTL = 2 * time.Second

var netipLoopback = netip.MustParseAddr("127.0.0.1")

// config is a quick test configuration running the test app with args.
func (h *harness) config(a app, args ...string) Config {
	c := DefaultConfig()
	c.App, c.Env = "web", "PRE"
	c.Endpoints = []string{h.etcd.Endpoint}
	c.IP = netipLoopback
	c.TTL = testTTL
	c.CheckInterval = 100 * time.Millisecond
	c.DrainTimeout, c.StopTimeout = 5*time.Second, 5*time.Second
	c.DialTimeout = time.Second
	c.Command = append([]string{os.Args[0], childArg, "out=" + a.out}, args...)
	return c
}

func (h *harness) newApp() app { return app{out: h.t.TempDir() + "/events"} }

// running is a registrar run in this process.
type running struct {
	sigs   chan os.Signal
	cancel context.CancelFunc
	done   chan struct{}
	code   int
	err    error
}

// start runs the registrar; it is cancelled and awaited at cleanup.
func (h *harness) start(cfg Config) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{sigs: make(chan os.Signal, 8), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.code, r.err = run(ctx, cfg, h.log, r.sigs, false)
	}()
	h.t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// wait returns the registrar's exit code once it has returned.
func (r *running) wait(t *testing.T, timeout time.Duration) (int, error) {
	t.Helper()
	select {
	case <-r.done:
		return r.code, r.err
	case <-time.After(timeout):
		t.Fatalf("registrar still running after %v", timeout)
		return 0, nil
	}
}

// instanceKey is the key of the app's instance, from the port it was given.
func (h *harness) instanceKey(t *testing.T, a app) (key, value string) {
	port := a.env(t, "PORT")
	return "/web_PRE/127.0.0.1-" + port, "127.0.0.1:" + port
}

// get returns key's kv, or nil.
func (h *harness) get(key string) (*clientv3.GetResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return h.cli.Get(ctx, key)
}

// registered waits until key holds value and returns its lease.
func (h *harness) registered(key, value string, timeout time.Duration) clientv3.LeaseID {
	h.t.Helper()
	var lease clientv3.LeaseID
	waitfor.Cond(h.t, timeout, key+" registered", func() error {
		resp, err := h.get(key)
		if err != nil {
			return err
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != value || resp.Kvs[0].Lease == 0 {
			return fmt.Errorf("got %v", resp.Kvs)
		}
		lease = clientv3.LeaseID(resp.Kvs[0].Lease)
		return nil
	})
	return lease
}

// absent waits until key is gone.
func (h *harness) absent(key string, timeout time.Duration) {
	h.t.Helper()
	waitfor.Cond(h.t, timeout, key+" gone", func() error {
		resp, err := h.get(key)
		if err != nil {
			return err
		}
		if len(resp.Kvs) != 0 {
			return fmt.Errorf("still %s", resp.Kvs[0].Value)
		}
		return nil
	})
}

// alive reports whether the app's process still runs and never got SIGTERM.
func (a app) alive(t *testing.T) {
	t.Helper()
	pid, _ := strconv.Atoi(a.wait(t, "pid", 10*time.Second).detail)
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("app pid %d: %v; it should have kept running", pid, err)
	}
	if ev, ok := a.find("sigterm"); ok {
		t.Fatalf("app got SIGTERM at %v; it should have kept running", ev.at)
	}
}

// authClient is a test client logged in as user.
func authClient(t *testing.T, endpoint, user, password string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, Username: user, Password: password,
		DialTimeout: 20 * time.Second, Logger: zap.NewNop()}) // a login is slow bcrypt under -race
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}
