package registrar

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/rollcall/rollcall/internal/etcdtest"
	"github.com/rollcall/rollcall/internal/proc"
	"github.com/rollcall/rollcall/internal/waitfor"
)

// logBuf keeps what the registrar logged, for conditions on transitions.
type logBuf struct{ proc.Buffer }

func (l *logBuf) has(s string) error {
	if !strings.Contains(l.String(), s) {
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
