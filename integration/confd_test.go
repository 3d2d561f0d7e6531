package integration_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/etcdtest"
	"github.com/rollcall/rollcall/internal/proctest"
	"github.com/rollcall/rollcall/internal/waitfor"
)

// confdSetup is a confdir written for confd (etcdv3 backend): a resource at
// the top of conf.d/ and one in a subdirectory, getv/getvs/gets/lsdir
// templates, confd's decimal mode "420", a field confd ignores, and the
// keys it reads in a real etcd.
type confdSetup struct {
	etcd    *etcdtest.Server
	confdir string
	out     string // where the dest files go
	node    string // http://127.0.0.1:port, as confd users write it
}

func newConfdSetup(t *testing.T) *confdSetup {
	t.Helper()
	bins.Need(t)
	s := &confdSetup{etcd: etcdtest.Start(t), confdir: t.TempDir(), out: t.TempDir()}
	s.node = "http://" + s.etcd.Endpoint
	mkdir(t, filepath.Join(s.confdir, "conf.d", "nginx"), filepath.Join(s.confdir, "templates"))
	writeFile(t, filepath.Join(s.confdir, "templates", "app.tmpl"),
		"db={{getv \"/database/url\"}}\n{{range gets \"/upstream/*\"}}{{base .Key}}={{.Value}}\n{{end}}{{range ls \"/upstream\"}}ls {{.}}\n{{end}}", 0o644)
	writeFile(t, filepath.Join(s.confdir, "templates", "upstream.tmpl"),
		"upstream app {\n{{range getvs \"/upstream/*\"}}    server {{.}};\n{{end}}}\n", 0o644)
	writeFile(t, filepath.Join(s.confdir, "conf.d", "app.toml"), fmt.Sprintf(`[template]
prefix = "/myapp"
src = "app.tmpl"
dest = %q
keys = ["/database", "/upstream"]
mode = "0640"
`, filepath.Join(s.out, "app.conf")), 0o644)
	writeFile(t, filepath.Join(s.confdir, "conf.d", "nginx", "upstream.toml"), fmt.Sprintf(`[template]
prefix = "/myapp"
src = "upstream.tmpl"
dest = %q
keys = ["/upstream"]
mode = "420"
flavour = "a field confd ignores"
reload_cmd = "true"
`, filepath.Join(s.out, "upstream.conf")), 0o644)
	kv := s.etcd.Client(t)
	for k, v := range map[string]string{
		"/myapp/database/url": "db.example:5432", "/myapp/upstream/a": "10.0.0.1:8080", "/myapp/upstream/b": "10.0.0.2:8080",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		_, err := kv.Put(ctx, k, v)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// outputs reads every file in out (name, mode, bytes) and removes them.
func (s *confdSetup) outputs(t *testing.T) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(s.out)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range ents {
		p := filepath.Join(s.out, e.Name())
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		got[e.Name()] = fmt.Sprintf("%04o\n%s", fi.Mode().Perm(), read(t, p))
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	return got
}

// TestConfdCommandLine: the renderer run with confd's command lines, as a
// supervisor program written for confd has them, writes byte for byte what
// it writes with its own flags, and what confd writes.
func TestConfdCommandLine(t *testing.T) {
	t.Parallel()
	s := newConfdSetup(t)
	confdToml := filepath.Join(s.confdir, "confd.toml")
	writeFile(t, confdToml, fmt.Sprintf("backend = \"etcdv3\"\nnodes = [%q]\nlog-level = \"debug\"\ninterval = 600\nwatch = true\n", s.node), 0o644)
	elsewhere := filepath.Join(t.TempDir(), "confd.toml") // read only through -config-file
	writeFile(t, elsewhere, fmt.Sprintf("backend = \"etcdv3\"\nnodes = [%q]\n", s.node), 0o644)
	if err := os.Remove(confdToml); err != nil {
		t.Fatal(err)
	}

	want := map[string]string{
		"app.conf":      "0640\ndb=db.example:5432\na=10.0.0.1:8080\nb=10.0.0.2:8080\nls a\nls b\n",
		"upstream.conf": "0644\nupstream app {\n    server 10.0.0.1:8080;\n    server 10.0.0.2:8080;\n}\n",
	}
	lines := [][]string{
		{"--onetime", "--endpoints", s.etcd.Endpoint, "--confdir", s.confdir}, // rollcall's own, first
		{"-onetime", "-backend", "etcdv3", "-node", s.node, "-confdir", s.confdir},
		{"-onetime", "-backend=etcdv3", "-node=" + s.node, "-confdir=" + s.confdir, "-log-level=debug"},
		{"-onetime", "-backend", "etcd", "-node", s.node, "-node", s.node, "-confdir", s.confdir},
		{"-onetime", "-node", s.node + "," + s.node, "-confdir", s.confdir, "-prefix", "/myapp"},
		{"-onetime", "-watch", "-interval", "60", "-backend", "etcdv3", "-node", s.node, "-confdir", s.confdir, "-keep-stage-file"},
		{"-onetime", "-config-file", elsewhere, "-confdir", s.confdir},
		{"-onetime", "-sync-only", "-noop=false", "-backend", "etcdv3", "-node", s.node, "-confdir", s.confdir},
		{"--onetime", "--backend", "etcdv3", "--node", s.node, "--confdir", s.confdir, "-basic-auth", "-scheme", "http"},
	}
	var first map[string]string
	for i, args := range lines {
		code, _, stderr := proctest.Run(t, 30*time.Second, bins.Path("renderer"), args...)
		if code != 0 {
			t.Fatalf("renderer %q exited %d:\n%s", args, code, stderr)
		}
		got := s.outputs(t)
		if i == 0 {
			first = got
			for name, w := range want {
				if got[name] != w {
					t.Errorf("rollcall's flags: %s =\n%s\nwant (confd's output)\n%s", name, got[name], w)
				}
			}
			if len(got) != len(want) {
				t.Errorf("rollcall's flags wrote %d files; want %d", len(got), len(want))
			}
			continue
		}
		for name, b := range first {
			if got[name] != b {
				t.Errorf("renderer %q: %s =\n%s\nwant, byte for byte as with rollcall's flags,\n%s", args, name, got[name], b)
			}
		}
		if !strings.Contains(stderr, `unknown field \"template.flavour\" ignored`) || !strings.Contains(stderr, `mode \"420\": decimal 420 is 0644`) {
			t.Errorf("renderer %q: no warnings for the unknown field and the decimal mode:\n%s", args, stderr)
		}
	}

	// Another backend: one clear line, exit 2.
	code, _, stderr := proctest.Run(t, 30*time.Second, bins.Path("renderer"), "-onetime", "-backend", "consul", "-node", "127.0.0.1:8500", "-confdir", s.confdir)
	if code != 2 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, `backend "consul": not supported`) {
		t.Errorf("-backend consul: exit %d, stderr %q; want 2 and one line saying it is not supported", code, stderr)
	}
}

// TestConfdSupervisorProgram: the renderer binary run as a supervisor
// program written for confd runs it (-watch -interval 60 ...): it renders,
// follows a change in etcd, and exits 0 on SIGTERM.
func TestConfdSupervisorProgram(t *testing.T) {
	t.Parallel()
	s := newConfdSetup(t)
	p := start(t, bins.Path("renderer"), "-watch", "-backend", "etcdv3", "-node", s.node, "-confdir", s.confdir, "-interval", "60", "-log-level", "info")
	up := filepath.Join(s.out, "upstream.conf")
	wait := func(want string) {
		t.Helper()
		waitfor.Cond(t, 10*time.Second, up+" rendered", func() error {
			if err := p.Exited(); err != nil {
				t.Fatalf("%v:\n%s", err, p.Output())
			}
			b, err := os.ReadFile(up)
			if err != nil {
				return err
			}
			if string(b) != want {
				return fmt.Errorf("got %q", b)
			}
			return nil
		})
	}
	wait("upstream app {\n    server 10.0.0.1:8080;\n    server 10.0.0.2:8080;\n}\n")
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := s.etcd.Client(t).Put(ctx, "/myapp/upstream/c", "10.0.0.3:8080"); err != nil {
		t.Fatal(err)
	}
	wait("upstream app {\n    server 10.0.0.1:8080;\n    server 10.0.0.2:8080;\n    server 10.0.0.3:8080;\n}\n")

	if err := p.Terminate(); err != nil {
		t.Fatal(err)
	}
	proctest.Wait(t, p, 10*time.Second)
	if st := p.State(); st != "exit status 0" {
		t.Fatalf("renderer on SIGTERM: %s; want exit status 0:\n%s", st, p.Output())
	}
}
