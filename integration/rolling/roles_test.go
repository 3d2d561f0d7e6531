package rolling_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/internal/etcdtest"
	"github.com/rollcall/rollcall/internal/proc"
	"github.com/rollcall/rollcall/internal/proctest"
	"github.com/rollcall/rollcall/internal/waitfor"
)

// TestRoles: etcd requires client certificates and has auth on, with the
// roles README.md's etcdctl lines create (run here through the Go API's
// equivalents). The renderer and the registrars, each with its own
// certificate-authenticated connection and role, register, render,
// acknowledge and drain; each role's credentials cannot write what is not
// theirs; a failure names its real cause.
func TestRoles(t *testing.T) {
	bins.Need(t)
	t.Parallel()
	certs := etcdtest.WriteCerts(t, t.TempDir())
	svc := app + "_" + env
	passwords := map[string]string{"root": "root-pw", "registrar-" + svc: "registrar-pw", "renderer": "renderer-pw"}
	tlsArgs := []string{"--cacert", certs.CA, "--cert", certs.ClientCert, "--key", certs.ClientKey}
	g := startGateway(t, gatewayConfig{
		server: rollingServer, resources: getvsResource("/", "/"+svc),
		templates: map[string]string{"getvs.tmpl": getvsAt("/" + svc)}, plainReload: true,
		certs:         &certs,
		rendererArgs:  append([]string{"--user", "renderer"}, tlsArgs...),
		rendererEnv:   []string{"ETCD_PASSWORD=" + passwords["renderer"]},
		registrarArgs: append([]string{"--user", "registrar-" + svc}, tlsArgs...),
		registrarEnv:  []string{"ETCD_PASSWORD=" + passwords["registrar-"+svc]},
		beforeRenderer: func(g *gateway) {
			vars := strings.NewReplacer("$SVC", svc, "$WATCHED", "/"+svc)
			for _, line := range readmeEtcdctl(t) {
				etcdctl(t, g.cli, vars.Replace(line), passwords)
			}
			g.cli = g.etcd.AuthClient(t, "root", passwords["root"])
		},
	})

	// Each program works with its role: register, render, ack, drain.
	url := g.nginx.URL("/")
	a, b := g.startBackend(t, 5*time.Second), g.startBackend(t, 5*time.Second)
	waitServed(t, url, addrs([]*backend{a, b}), 20*time.Second)
	a.stop(t)
	proctest.AssertLogged(t, a.reg, "drain: renderers acknowledged")
	if r := a.readReport(t); r.AfterSignal > 0 {
		t.Errorf("%s got %d requests after its SIGTERM", a.addr, r.AfterSignal)
	}
	waitServed(t, url, []string{b.addr}, 10*time.Second)

	// Each role writes only what is its own.
	reg := g.etcd.AuthClient(t, "registrar-"+svc, passwords["registrar-"+svc])
	ren := g.etcd.AuthClient(t, "renderer", passwords["renderer"])
	for _, tc := range []struct {
		who  string
		cli  *clientv3.Client
		key  string
		deny bool
	}{
		{"registrar", reg, "/" + svc + "/127.0.0.1-9", false},
		{"registrar", reg, "/_ports/127.0.0.1/9", false},
		{"registrar", reg, "/other_" + env + "/127.0.0.1-9", true},
		{"registrar", reg, "/_renderers/gw1", true},
		{"renderer", ren, "/_renderers/gw9", false},
		{"renderer", ren, "/" + svc + "/127.0.0.1-9", true},
		{"renderer", ren, "/_ports/127.0.0.1/9", true},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := tc.cli.Put(ctx, tc.key, "127.0.0.1:9")
		cancel()
		switch {
		case tc.deny && err == nil:
			t.Errorf("%s wrote %s; want permission denied", tc.who, tc.key)
		case tc.deny && (err != rpctypes.ErrPermissionDenied || !strings.Contains(err.Error(), "etcdserver: permission denied")):
			t.Errorf("%s put %s = %v; want etcdserver: permission denied", tc.who, tc.key, err)
		case !tc.deny && err != nil:
			t.Errorf("%s put %s = %v; want it allowed", tc.who, tc.key, err)
		}
	}

	// A failure names its cause, not a bare deadline.
	base := []string{"--env", env, "--endpoints", g.endpoints, "--ip", "127.0.0.1", "--ttl", "2s", "--check", "none"}
	for _, tc := range []struct {
		name string
		args []string // after base
		env  []string
		want string
	}{
		{"wrong password", append([]string{"--app", app, "--user", "registrar-" + svc}, tlsArgs...),
			[]string{"ETCD_PASSWORD=wrong"}, "etcdserver: authentication failed, invalid user ID or password"},
		{"role of another app", append([]string{"--app", "other", "--user", "registrar-" + svc}, tlsArgs...),
			[]string{"ETCD_PASSWORD=" + passwords["registrar-"+svc]}, "etcdserver: permission denied"},
		{"no client certificate", []string{"--app", app, "--user", "registrar-" + svc, "--cacert", certs.CA},
			[]string{"ETCD_PASSWORD=" + passwords["registrar-"+svc]}, "remote error: tls: certificate required"},
		{"server not trusted", []string{"--app", app, "--cert", certs.ClientCert, "--key", certs.ClientKey},
			nil, "x509: certificate signed by unknown authority"},
	} {
		p := proctest.Start(t, "registrar-"+strings.ReplaceAll(tc.name, " ", "-"), tc.env, 10*time.Second,
			append(append([]string{bins.Path("registrar")}, base...), append(tc.args, "--", bins.Path("demo-backend"))...)...)
		waitLogged(t, p, 30*time.Second, tc.want)
	}
	// The renderer logs in at start: it exits saying why.
	out, err := runRenderer(t, g, append([]string{"--onetime", "--user", "renderer", "--cacert", certs.CA}, "--endpoints", g.endpoints),
		"ETCD_PASSWORD="+passwords["renderer"])
	if err == nil || !strings.Contains(out, "remote error: tls: certificate required") {
		t.Errorf("renderer without a client certificate: %v, output:\n%s\nwant it to fail naming the refused certificate", err, out)
	}
}

// waitLogged waits until p's output holds s.
func waitLogged(t *testing.T, p *proc.Proc, timeout time.Duration, s string) {
	t.Helper()
	waitfor.Cond(t, timeout, fmt.Sprintf("%s logs %q", p.Name, s), func() error {
		if out := p.Output(); !strings.Contains(out, s) {
			return fmt.Errorf("output:\n%s", proc.Tail(out, 5))
		}
		return nil
	})
}

// runRenderer runs the renderer on g's confdir with args until it exits
// and returns its output.
func runRenderer(t *testing.T, g *gateway, args []string, env ...string) (string, error) {
	t.Helper()
	p := proctest.Start(t, "renderer-once", env, 10*time.Second, append([]string{bins.Path("renderer"), "--confdir", g.confdir}, args...)...)
	proctest.Wait(t, p, 60*time.Second)
	return p.Output(), p.Exited()
}

// readmeEtcdctl returns the etcdctl lines of README.md's least-privilege
// recipe.
func readmeEtcdctl(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "## "):
			in = line == "## TLS, auth and least privilege"
		case in && strings.HasPrefix(line, "etcdctl "):
			lines = append(lines, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(lines) < 10 {
		t.Fatalf("README.md's least-privilege recipe: %d etcdctl lines", len(lines))
	}
	return lines
}

// etcdctl runs one etcdctl command line through the Go API's equivalent;
// `user add` takes the password from passwords.
func etcdctl(t *testing.T, cli *clientv3.Client, line string, passwords map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := strings.Fields(strings.TrimPrefix(line, "etcdctl "))
	var err error
	switch {
	case len(f) == 3 && f[0] == "role" && f[1] == "add":
		_, err = cli.RoleAdd(ctx, f[2])
	case len(f) == 6 && f[0] == "role" && f[1] == "grant-permission" && f[4] == "--prefix=true":
		perm, ok := map[string]clientv3.PermissionType{
			"read": clientv3.PermissionType(clientv3.PermRead), "write": clientv3.PermissionType(clientv3.PermWrite),
			"readwrite": clientv3.PermissionType(clientv3.PermReadWrite),
		}[f[3]]
		if !ok {
			t.Fatalf("%s: permission %q", line, f[3])
		}
		_, err = cli.RoleGrantPermission(ctx, f[2], f[5], clientv3.GetPrefixRangeEnd(f[5]), perm)
	case len(f) == 3 && f[0] == "user" && f[1] == "add":
		pw, ok := passwords[f[2]]
		if !ok {
			t.Fatalf("%s: no password for %s", line, f[2])
		}
		_, err = cli.UserAdd(ctx, f[2], pw)
	case len(f) == 4 && f[0] == "user" && f[1] == "grant-role":
		_, err = cli.UserGrantRole(ctx, f[2], f[3])
	case len(f) == 2 && f[0] == "auth" && f[1] == "enable":
		_, err = cli.AuthEnable(ctx)
	default:
		t.Fatalf("README etcdctl line %q: not a command this test knows", line)
	}
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
}
