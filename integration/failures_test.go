package integration_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/internal/waitfor"
)

// TestBrokenTemplateEdit: a resource edited to an unknown owner, a
// template edited into a parse error, then into an execution error, each
// leave the installed file and nginx alone while the log names the file (and
// the template line) and a metric counts it; the fixed template is applied,
// with the registration made while it was broken.
func TestBrokenTemplateEdit(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.startNginx(r.perApp("a_test"))
	r.onetime()
	r.startRenderer()
	r.serve(5*time.Second, "a_test", "b1")

	tmpl := filepath.Join(r.confdir, "templates", "upstream.tmpl")
	res := filepath.Join(r.confdir, "conf.d", "a_test.toml")
	dest := filepath.Join(r.out, "a_test.conf")
	orig, origRes, installed := read(t, tmpl), read(t, res), read(t, dest)
	steps := []struct {
		name, file, content string
		restore             string // written back after the checks, if set
		log                 string // in the renderer's log after the edit
		metric, label       string // grows after the edit
		register            string // a backend registered while broken
	}{
		// (An unknown field only warns, as confd ignores it: TestConfdCommandLine.)
		{"unknown owner", res, origRes + "owner = \"no-such-user-rollcall\"\n", origRes,
			`a_test\.toml.*no-such-user-rollcall`, "rollcall_renderer_resource_load_errors_total", "", ""},
		{"template parse error", tmpl, orig + "{{ if }}\n", "",
			`upstream\.tmpl:\d+`, "rollcall_renderer_resource_load_errors_total", "", ""},
		{"template execution error", tmpl, strings.Replace(orig, "{{with service}}", `{{with service}}{{getv "/no/such/key"}}`, 1), "",
			`upstream\.tmpl:\d+`, "rollcall_renderer_renders_total", `result="error"`, "b2"},
	}
	for _, s := range steps {
		offset := len(r.renderer.Output())
		m0 := r.metric(s.metric, s.label)
		writeFile(t, s.file, s.content, 0o644)
		r.logSince(10*time.Second, offset, regexp.MustCompile(s.log))
		if s.register != "" { // once the broken edit is loaded: a change before that applies at once, with the template then loaded
			r.register("a_test", newBackend(t, s.register))
		}
		waitfor.Cond(t, 5*time.Second, s.name+": "+s.metric+" not counted", func() error {
			if m := r.metric(s.metric, s.label); m == m0 {
				return fmt.Errorf("%s{%s} still %v", s.metric, s.label, m)
			}
			return nil
		})
		if got := read(t, dest); got != installed {
			t.Fatalf("%s: installed file changed:\n%s", s.name, got)
		}
		if err := r.servedBy("a_test", "b1"); err != nil {
			t.Fatalf("%s: nginx: %v", s.name, err)
		}
		if s.restore != "" {
			writeFile(t, s.file, s.restore, 0o644)
		}
	}

	writeFile(t, tmpl, orig+"# fixed\n", 0o644)
	r.waitServed(10*time.Second, "a_test", "b1", "b2")
	if got := read(t, dest); !strings.HasSuffix(got, "# fixed\n") {
		t.Fatalf("fixed template not applied:\n%s", got)
	}
	r.waitReady(5 * time.Second)
}

// TestFailingNginxCheck: fragments that are valid alone but duplicate an
// upstream fail `nginx -t` on the whole config. A new resource (dup.conf,
// from the start) and a changed one (c_test.conf, when /c_test/flag appears)
// are rolled back to their previous bytes, nginx keeps serving c_test's old
// upstream, and the valid resource changed in the same revision (a_test)
// still applies.
func TestFailingNginxCheck(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	cfg := r.perApp("a_test", "c_test")
	writeFile(t, filepath.Join(r.confdir, "templates", "c.tmpl"), read(t, filepath.Join(r.confdir, "templates", "upstream.tmpl"))+
		"{{if exists \"/flag\"}}upstream a_test { server 127.0.0.1:1; }\n{{end}}", 0o644)
	ctoml := filepath.Join(r.confdir, "conf.d", "c_test.toml")
	writeFile(t, ctoml, strings.Replace(read(t, ctoml), `"upstream.tmpl"`, `"c.tmpl"`, 1), 0o644)
	dup := r.resource("dup", "upstream.toml.example", "dup.conf", "/a_test")
	writeFile(t, dup, placeholder, 0o644)
	cfg.HTTP += "include " + dup + ";\n"
	r.startNginx(cfg)
	b1 := newBackend(t, "b1")
	r.register("a_test", b1)
	r.register("c_test", newBackend(t, "c1"))
	r.startRenderer()
	r.waitServed(10*time.Second, "a_test", "b1")
	r.waitServed(10*time.Second, "c_test", "c1")
	cconf := read(t, filepath.Join(r.out, "c_test.conf"))

	cfail := func() float64 {
		return r.metric("rollcall_renderer_checks_total", `resource="c_test.toml"`, `result="failure"`)
	}
	cfail0 := cfail()
	b2 := newBackend(t, "b2")
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := r.kv.Txn(ctx).Then(
		clientv3.OpPut("/c_test/flag", "1"),
		clientv3.OpPut(instanceKey(t, "a_test", b2.addr), b2.addr.String()),
	).Commit(); err != nil {
		t.Fatal(err)
	}
	r.waitServed(10*time.Second, "a_test", "b1", "b2")
	waitfor.Cond(t, 5*time.Second, "check failures not counted", func() error {
		if m := r.metric("rollcall_renderer_checks_total", `resource="dup.toml"`, `result="failure"`); m < 1 {
			return fmt.Errorf("checks_total{resource=dup.toml,result=failure} = %v", m)
		}
		if m := cfail(); m <= cfail0 {
			return fmt.Errorf("checks_total{resource=c_test.toml,result=failure} still %v after the flag", m)
		}
		return nil
	})
	if err := r.servedBy("c_test", "c1"); err != nil {
		t.Fatalf("c_test's old upstream: %v", err)
	}
	if got := read(t, dup); got != placeholder {
		t.Fatalf("dup.conf = %q; want it rolled back to %q", got, placeholder)
	}
	if got := read(t, filepath.Join(r.out, "c_test.conf")); got != cconf {
		t.Fatalf("c_test.conf = %q; want it rolled back to %q", got, cconf)
	}
	r.onlyFiles("a_test.conf", "c_test.conf", "dup.conf")
	if !strings.Contains(r.renderer.Output(), "duplicate upstream") {
		t.Fatal(`renderer log does not quote nginx's "duplicate upstream"`)
	}
	if _, err := r.get("/readyz"); err == nil {
		t.Fatal("/readyz is 200 while resources keep failing")
	}
	for i, x := range r.reloads() {
		if x.code != 0 {
			t.Errorf("reload %d exited %d: nginx was asked to reload a config it refused", i, x.code)
		}
	}
}

// TestInjectionNeverWritten: values and service names crafted to inject nginx
// directives are skipped and counted; nginx serves normally and nothing
// listens where the injection asked.
func TestInjectionNeverWritten(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.startShipped()
	r.startRenderer()
	port := injectPort(t)
	inject := fmt.Sprintf("server { listen 127.0.0.1:%d; location / { root /etc; } }", port)
	evil := map[string]string{
		"/a_test/1.2.3.4-80": "1.2.3.4:80; } " + inject + " upstream x {",
		"/a_test/5.6.7.8-80": "5.6.7.8:80 backup",
		"/a_test/9.9.9.9-80": "9.9.9.10:80",
		"/a_test/bad":        "127.0.0.1:1",
		// a service name that would close proxy.tmpl's location block
		fmt.Sprintf("/b_x{}server{listen 127.0.0.1:%d;return 200 pwned;}upstream c_d/127.0.0.1-1", port): "127.0.0.1:1",
	}
	for k, v := range evil {
		r.put(k, v)
	}
	r.serve(10*time.Second, "a_test", "b1")
	waitfor.Cond(t, 5*time.Second, "invalid values not counted", func() error {
		if m := r.metric("rollcall_renderer_invalid_values_skipped_total"); m < 3 {
			return fmt.Errorf("invalid_values_skipped_total = %v; want >= 3", m)
		}
		return nil
	})
	for _, f := range []string{"upstreams.conf", "proxy.conf"} {
		conf := read(t, filepath.Join(r.out, f))
		for _, bad := range []string{"root", "listen", "1.2.3.4", "5.6.7.8", "9.9.9", "backup", "b_x", "pwned"} {
			if strings.Contains(conf, bad) {
				t.Errorf("%s contains %q:\n%s", f, bad, conf)
			}
		}
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		c.Close()
		t.Fatalf("something listens on the injected port %d", port)
	}
}
