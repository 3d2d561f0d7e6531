package registrar

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/rollcall/rollcall/internal/waitfor"
)

// childMain is the app the tests run under the registrar. Arguments are
// key=value:
//
//	out=FILE         append events: "<event> <unixnano> <detail>"
//	exit=N           exit code on SIGTERM or exit-after (default 0)
//	ready-delay=D    listen on $HOST_IP:$PORT only after D
//	no-listen=1      never listen
//	ignore-term=1    record SIGTERM, keep running
//	exit-after=D     exit by itself after D
//	exit-on-usr1=1   exit when SIGUSR1 arrives
//	kill-self=1      kill itself with SIGKILL after exit-after
//	health-file=F    /health answers 503 while F exists, else 200
//	etcd=EP keydir=D on SIGTERM record whether D<HOST_IP>-<PORT> is in etcd
//	group=FILE       start a copy of this app in its process group (no-listen,
//	                 events to FILE) and record "member <pid>"
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
	if opt["group"] != "" {
		p, err := os.StartProcess(os.Args[0], []string{os.Args[0], childArg, "out=" + opt["group"], "no-listen=1"},
			&os.ProcAttr{Files: []*os.File{nil, os.Stdout, os.Stderr}})
		if err != nil {
			record("error", err.Error())
			return 97
		}
		record("member", strconv.Itoa(p.Pid))
		go p.Wait()
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
				if s == syscall.SIGUSR1 && opt["exit-on-usr1"] == "1" {
					return code
				}
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
