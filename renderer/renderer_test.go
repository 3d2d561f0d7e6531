package renderer

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	pkgtestutil "go.etcd.io/etcd/client/pkg/v3/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/rollcall/rollcall/internal/etcdtest"
	"github.com/rollcall/rollcall/internal/proc"
	"github.com/rollcall/rollcall/internal/waitfor"
	"github.com/rollcall/rollcall/registry"
)

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		os.Exit(m.Run()) // the fuzzing engine's signal goroutine is no leak
	}
	pkgtestutil.MustTestMainWithLeakDetection(m)
}

// listTmpl prints every service and its valid instances, one line each.
const listTmpl = `{{range services}}{{.Name}}:{{range .Instances}} {{.}}{{end}}
{{end}}`

// harness is a renderer under test: real etcd, a temp confdir, dest files
// in a temp dir, and a reload command that appends a line to a log file.
type harness struct {
	t       *testing.T
	etcd    *etcdtest.Server
	cli     *clientv3.Client
	dir     string // confdir
	out     string // where dest files go
	reloads string // file the reload command appends to
	reg     *prometheus.Registry
	logs    *proc.Buffer
	cfg     Config
	cancel  context.CancelFunc
	done    chan error
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	if testing.Short() {
		t.Skip("etcd test")
	}
	h := &harness{t: t, etcd: etcdtest.Start(t), dir: t.TempDir(), out: t.TempDir(), reg: prometheus.NewRegistry()}
	h.cli = h.etcd.Client(t)
	h.reloads = filepath.Join(h.out, "reloads.log")
	h.logs = &proc.Buffer{Echo: t.Output()}
	for _, d := range []string{"conf.d", "templates"} {
		if err := os.Mkdir(filepath.Join(h.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	h.cfg = Config{
		ConfDir: h.dir, Endpoints: []string{h.etcd.Endpoint}, ID: "gw1",
		Cooldown: 300 * time.Millisecond, CommandTimeout: 10 * time.Second, AckTTL: 5 * time.Second,
	}
	return h
}

// resource writes conf.d/<name>.toml for template tmpl (written to
// templates/<name>.tmpl) with dest <out>/<name>.conf; extra is appended
// to the [template] table.
func (h *harness) resource(name, keys, tmpl, extra string) string {
	h.t.Helper()
	dest := filepath.Join(h.out, name+".conf")
	h.write("templates/"+name+".tmpl", tmpl)
	h.write("conf.d/"+name+".toml", fmt.Sprintf("[template]\nsrc = %q\ndest = %q\nkeys = [%s]\nreload_cmd = \"echo %s >> %s\"\n%s",
		name+".tmpl", dest, keys, name, h.reloads, extra))
	return dest
}

func (h *harness) write(rel, content string) {
	h.t.Helper()
	p := filepath.Join(h.dir, rel)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil { // as editors do
		h.t.Fatal(err)
	}
}

func (h *harness) start() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	go func() { h.done <- Run(ctx, h.cfg, log, h.reg) }()
	h.t.Cleanup(h.stop)
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		h.t.Error("Run did not return after cancel")
	}
}

func (h *harness) put(key, value string) int64 {
	h.t.Helper()
	resp, err := h.cli.Put(context.Background(), key, value)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.Header.Revision
}

func (h *harness) del(key string) int64 {
	h.t.Helper()
	resp, err := h.cli.Delete(context.Background(), key)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.Header.Revision
}

func (h *harness) waitFile(path, want string) {
	h.t.Helper()
	waitfor.Cond(h.t, 10*time.Second, path+" rendered", func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if string(b) != want {
			return fmt.Errorf("got %q, want %q", b, want)
		}
		return nil
	})
}

func (h *harness) reloadCount() int {
	b, _ := os.ReadFile(h.reloads)
	return strings.Count(string(b), "\n")
}

func (h *harness) counter(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }

func (h *harness) ack() (registry.Ack, error) {
	var a registry.Ack
	resp, err := h.cli.Get(context.Background(), registry.RendererKey("", "gw1"))
	if err != nil {
		return a, err
	}
	if len(resp.Kvs) == 0 {
		return a, fmt.Errorf("no ack")
	}
	return a, json.Unmarshal(resp.Kvs[0].Value, &a)
}

func key(svc, ip string, port int) string { return fmt.Sprintf("/%s/%s-%d", svc, ip, port) }

func TestRunRendersAndReloads(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	dest := h.resource("up", `"/"`, listTmpl, "")
	h.put(key("web_prod", "10.0.0.1", 80), "10.0.0.1:80")
	h.start()
	h.waitFile(dest, "web_prod: 10.0.0.1:80\n")

	rev := h.put(key("web_prod", "10.0.0.2", 80), "10.0.0.2:80")
	h.waitFile(dest, "web_prod: 10.0.0.1:80 10.0.0.2:80\n")
	waitfor.Cond(t, 10*time.Second, "ack of the put", func() error {
		a, err := h.ack()
		if err == nil && a.Revision < rev {
			err = fmt.Errorf("ack at %d, want >= %d", a.Revision, rev)
		}
		return err
	})
	rev = h.del(key("web_prod", "10.0.0.1", 80))
	h.waitFile(dest, "web_prod: 10.0.0.2:80\n")
	waitfor.Cond(t, 10*time.Second, "ack of the delete", func() error {
		a, err := h.ack()
		if err == nil && (a.Revision < rev || len(a.Prefixes) != 1 || a.Prefixes[0] != "/") {
			err = fmt.Errorf("ack %+v, want rev >= %d, prefixes [/]", a, rev)
		}
		return err
	})
	if n := h.reloadCount(); n != 3 {
		t.Errorf("reloads = %d, want 3 (one per isolated change)", n)
	}
	// A clean stop marks the ack stopped, then revokes its lease: the
	// deletion's previous value tells registrars it was no expiry.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wch := h.cli.Watch(ctx, registry.RendererKey("", "gw1"), clientv3.WithPrevKV(), clientv3.WithFilterPut())
	h.stop()
	if _, err := h.ack(); err == nil {
		t.Error("ack key still there after stop: lease not revoked")
	}
	wr := <-wch
	if len(wr.Events) != 1 || wr.Events[0].PrevKv == nil {
		t.Fatalf("ack deletion = %v, %v; want one with its previous value", wr.Events, wr.Err())
	}
	var last registry.Ack
	if err := json.Unmarshal(wr.Events[0].PrevKv.Value, &last); err != nil || !last.Stopped {
		t.Errorf("last ack before the stop = %s; want stopped", wr.Events[0].PrevKv.Value)
	}
}

// TestAckWaitsForFailingResource: the acknowledged revision is what every
// resource applied; a resource that keeps failing holds it back (a drain
// must not believe a gateway that did not apply the removal), and it moves
// on once the resource applies.
func TestAckWaitsForFailingResource(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	flag := filepath.Join(h.out, "ok")
	good := h.resource("good", `"/good_prod"`, listTmpl, "")
	bad := h.resource("bad", `"/bad_prod"`, listTmpl, fmt.Sprintf(`check_cmd = "test -e %s"`, flag))
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	h.put(key("bad_prod", "10.0.0.2", 80), "10.0.0.2:80")
	h.start()
	h.waitFile(bad, "bad_prod: 10.0.0.2:80\n")
	var before registry.Ack
	waitfor.Cond(t, 10*time.Second, "first ack", func() (err error) {
		before, err = h.ack()
		return err
	})
	if err := os.Remove(flag); err != nil {
		t.Fatal(err)
	}
	badRev := h.put(key("bad_prod", "10.0.0.3", 80), "10.0.0.3:80")
	goodRev := h.put(key("good_prod", "10.0.0.1", 80), "10.0.0.1:80")
	h.waitFile(good, "good_prod: 10.0.0.1:80\n")
	waitfor.Cond(t, 10*time.Second, "bad resource failing", func() error {
		if metric(t, h.reg, "rollcall_renderer_checks_total", "resource", "bad.toml", "result", "failure") < 1 {
			return fmt.Errorf("no failed check yet")
		}
		return nil
	})
	if a, err := h.ack(); err != nil || a.Revision >= badRev {
		t.Errorf("ack %+v, %v while bad.toml fails; want revision < %d (was %d)", a, err, badRev, before.Revision)
	}
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 15*time.Second, "ack past both changes", func() error {
		a, err := h.ack()
		if err == nil && a.Revision < goodRev {
			err = fmt.Errorf("ack at %d, want >= %d", a.Revision, goodRev)
		}
		return err
	})
	h.waitFile(bad, "bad_prod: 10.0.0.2:80 10.0.0.3:80\n")
}

// TestResourceWait: a resource's own wait applies trailing quiescence to it
// alone; a resource without one still applies at once.
func TestResourceWait(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	fast := h.resource("fast", `"/fast_prod"`, listTmpl, "")
	slow := h.resource("slow", `"/slow_prod"`, listTmpl, `wait = "2s:4s"`)
	h.start()
	h.waitFile(fast, "fast_prod:\n")
	h.waitFile(slow, "slow_prod:\n")
	waitfor.Cond(t, 10*time.Second, "startup applied", func() error {
		if !strings.Contains(h.logs.String(), `msg=applied`) {
			return fmt.Errorf("nothing applied yet")
		}
		return nil
	})
	start := time.Now()
	h.put(key("slow_prod", "10.0.0.2", 80), "10.0.0.2:80")
	h.put(key("fast_prod", "10.0.0.1", 80), "10.0.0.1:80")
	h.waitFile(fast, "fast_prod: 10.0.0.1:80\n")
	if b, _ := os.ReadFile(slow); string(b) != "slow_prod:\n" {
		t.Errorf("slow resource applied after %v; want its 2s wait first", time.Since(start))
	}
	h.waitFile(slow, "slow_prod: 10.0.0.2:80\n")
	if d := time.Since(start); d < 1900*time.Millisecond {
		t.Errorf("slow resource applied after %v; want >= 2s", d)
	}
}

// TestSIGHUPReloads: the relayed SIGHUP reloads resources, including a
// template in a subdirectory fsnotify does not watch.
func TestSIGHUPReloads(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	hup := make(chan os.Signal, 1)
	h.cfg.Reload = hup
	dest := filepath.Join(h.out, "sub.conf")
	if err := os.Mkdir(filepath.Join(h.dir, "templates/sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	h.write("templates/sub/x.tmpl", "v1\n")
	h.write("conf.d/sub.toml", fmt.Sprintf("[template]\nsrc = \"sub/x.tmpl\"\ndest = %q\nkeys = [\"/x\"]\n", dest))
	h.start()
	h.waitFile(dest, "v1\n")
	if err := os.WriteFile(filepath.Join(h.dir, "templates/sub/x.tmpl"), []byte("v2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hup <- syscall.SIGHUP
	h.waitFile(dest, "v2\n")
}

// TestEtcdAuth: --user and ETCD_PASSWORD reach the etcd client.
func TestEtcdAuth(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := t.Context()
	for _, step := range []func() error{
		func() error { _, err := h.cli.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := h.cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := h.cli.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	dest := h.resource("up", `"/"`, listTmpl, "")
	h.cfg.User, h.cfg.Password = "root", "rootpw"
	h.start()
	h.waitFile(dest, "")
	waitfor.Cond(t, 10*time.Second, "ack written with auth", func() error {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{h.etcd.Endpoint}, Username: "root", Password: "rootpw", Logger: zap.NewNop()})
		if err != nil {
			return err
		}
		defer cli.Close()
		resp, err := cli.Get(ctx, registry.RendererKey("", "gw1"))
		if err == nil && len(resp.Kvs) == 0 {
			err = errors.New("no ack")
		}
		return err
	})
}

// TestRunAuthEtcdDownAtStart: with auth the etcd client logs in when it is
// made, which fails while etcd is down; the renderer waits for etcd (as
// for any outage) instead of exiting, and renders once it answers. Refused
// credentials still end it at once, saying so.
func TestRunAuthEtcdDownAtStart(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h.put(key("web_prod", "10.0.0.1", 80), "10.0.0.1:80")
	etcdtest.EnableAuth(t, h.cli, "s3cret")
	dest := h.resource("up", `"/"`, listTmpl, "")

	h.cfg.User, h.cfg.Password = "root", "wrong"
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	if err := Run(ctx, h.cfg, log, prometheus.NewRegistry()); err == nil || !strings.Contains(err.Error(), "authentication failed") {
		t.Fatalf("Run with a wrong password = %v; want authentication failed", err)
	}

	h.etcd.Stop()
	h.cfg.Password = "s3cret"
	h.start()
	waitfor.Cond(t, 20*time.Second, "renderer waits for etcd", func() error {
		return hasLog(h.logs.String(), "etcd unreachable at start, retrying")
	})
	select {
	case err := <-h.done:
		t.Fatalf("Run returned while etcd was down: %v", err)
	default:
	}
	h.etcd.Restart()
	h.waitFile(dest, "web_prod: 10.0.0.1:80\n")
}

func hasLog(logs, s string) error {
	if !strings.Contains(logs, s) {
		return fmt.Errorf("no %q logged", s)
	}
	return nil
}
