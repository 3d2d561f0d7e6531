// Package deploy_test keeps the shipped deploy files true: the systemd unit
// and the supervisor program run the same renderer command line, that
// command line is accepted by the renderer's own flag and config parsing
// against the sample /etc/rollcall layout, and every shipped resource loads.
package deploy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rollcall/rollcall/internal/etcdtest"
	"github.com/rollcall/rollcall/internal/nginxtest"
	"github.com/rollcall/rollcall/internal/proctest"
	"github.com/rollcall/rollcall/internal/waitfor"
	"github.com/rollcall/rollcall/renderer"
	"github.com/rollcall/rollcall/renderer/confd"
)

// ini parses the systemd unit and supervisor formats closely enough for
// their key=value lines: section -> key -> values (systemd repeats keys).
func ini(t *testing.T, path, comment string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, comment):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not key=value in a section: %q", path, n, line)
			}
			k = strings.TrimSpace(k)
			out[section][k] = append(out[section][k], strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func one(t *testing.T, m map[string]map[string][]string, section, key string) string {
	t.Helper()
	v := m[section][key]
	if len(v) != 1 {
		t.Fatalf("[%s] %s = %q; want exactly one value", section, key, v)
	}
	return v[0]
}

func TestUnitAndProgramAgree(t *testing.T) {
	t.Parallel()
	unit := ini(t, filepath.Join("systemd", "rollcall-renderer.service"), "#")
	prog := ini(t, filepath.Join("supervisor", "rollcall-renderer.conf"), ";")

	for _, tc := range []struct{ section, key, want string }{
		{"Service", "Restart", "always"},
		{"Service", "ExecReload", "/bin/kill -HUP $MAINPID"},
		{"Service", "KillSignal", "SIGTERM"},
		{"Install", "WantedBy", "multi-user.target"},
	} {
		if got := one(t, unit, tc.section, tc.key); got != tc.want {
			t.Errorf("unit [%s] %s = %q; want %q", tc.section, tc.key, got, tc.want)
		}
	}
	for _, tc := range []struct{ key, want string }{
		{"autorestart", "true"},
		{"stopsignal", "TERM"},
	} {
		if got := one(t, prog, "program:rollcall-renderer", tc.key); got != tc.want {
			t.Errorf("program %s = %q; want %q", tc.key, got, tc.want)
		}
	}
	exec := one(t, unit, "Service", "ExecStart")
	command := one(t, prog, "program:rollcall-renderer", "command")
	if exec != command {
		t.Errorf("unit ExecStart %q != supervisor command %q", exec, command)
	}
}

// TestCommandLineParses runs the unit's command line through the renderer's
// own parsing (flags + renderer.toml) with /etc/rollcall laid out as
// deploy/rollcall/README.md says, then loads every resource.
func TestCommandLineParses(t *testing.T) {
	t.Parallel()
	unit := ini(t, filepath.Join("systemd", "rollcall-renderer.service"), "#")
	args := strings.Fields(one(t, unit, "Service", "ExecStart"))
	if args[0] != "/usr/local/bin/renderer" {
		t.Fatalf("ExecStart runs %q; want /usr/local/bin/renderer", args[0])
	}

	etc := installEtc(t, strings.NewReplacer())
	for i, a := range args {
		args[i] = strings.ReplaceAll(a, "/etc/rollcall", etc)
	}

	cfg, err := renderer.ParseArgs(args[1:], func(string) string { return "" })
	if err != nil {
		t.Fatalf("renderer %v: %v", args[1:], err)
	}
	if cfg.ConfDir != etc {
		t.Errorf("confdir = %q; want %q", cfg.ConfDir, etc)
	}
	if want := []string{"10.0.0.11:2379", "10.0.0.12:2379", "10.0.0.13:2379"}; !slices.Equal(cfg.Endpoints, want) {
		t.Errorf("endpoints from renderer.toml = %q; want %q", cfg.Endpoints, want)
	}
	if cfg.MetricsAddr != "127.0.0.1:9180" {
		t.Errorf("metrics addr from renderer.toml = %q; want 127.0.0.1:9180", cfg.MetricsAddr)
	}

	res, errs := confd.LoadDir(cfg.ConfDir, cfg.Prefix)
	for _, e := range errs {
		t.Error(e)
	}
	var dests []string
	for _, r := range res {
		dests = append(dests, r.Dest)
	}
	slices.Sort(dests)
	if want := []string{"/etc/nginx/conf.d/rollcall-upstreams.conf", "/etc/nginx/snippets/rollcall-proxy.conf"}; !slices.Equal(dests, want) {
		t.Errorf("dests = %q; want %q", dests, want)
	}
	site, err := os.ReadFile(filepath.Join("nginx", "rollcall.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(site), "include /etc/nginx/snippets/rollcall-proxy.conf;") {
		t.Errorf("nginx/rollcall.conf does not include the proxy resource's dest")
	}
}

// installEtc lays out /etc/rollcall in a temp dir as deploy/rollcall/README.md
// installs it, passing the conf.d files through r; it returns the dir.
func installEtc(t *testing.T, r *strings.Replacer) string {
	t.Helper()
	etc := t.TempDir()
	copyFile(t, filepath.Join("rollcall", "renderer.toml"), filepath.Join(etc, "renderer.toml"), nil)
	for _, name := range []string{"upstreams.toml", "proxy.toml"} {
		copyFile(t, filepath.Join("..", "conf.d", name), filepath.Join(etc, "conf.d", name), r)
	}
	if err := os.CopyFS(filepath.Join(etc, "templates"), os.DirFS(filepath.Join("..", "templates"))); err != nil {
		t.Fatal(err)
	}
	return etc
}

// copyFile copies from to to, through r when not nil.
func copyFile(t *testing.T, from, to string, r *strings.Replacer) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if r != nil {
		b = []byte(r.Replace(string(b)))
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestInstallOnetime follows deploy/rollcall/README.md's install steps with a
// real nginx and etcd: the unit's command line plus --onetime renders the
// shipped resources, then the shipped site is enabled and routes
// /<app>_<env>/ to the registered instance. /etc/nginx and the nginx
// commands point at the test's nginx; the etcd endpoint and the metrics
// address (fixed ports in the sample) are overridden by flags.
func TestInstallOnetime(t *testing.T) {
	if testing.Short() {
		t.Skip("real etcd and nginx: skipped in -short mode")
	}
	t.Parallel()
	ngx := nginxtest.New(t)
	sitePort := proctest.FreePort(t)
	etcNginx := filepath.Join(ngx.Prefix, "etc-nginx")
	r := strings.NewReplacer(
		"/etc/nginx", etcNginx,
		"/usr/sbin/nginx -t -q", ngx.CommandLine("-t", "-q"),
		"/usr/local/bin/nginx-reload --signal --pid /run/nginx.pid --error-log /var/log/nginx/error.log", ngx.CommandLine("-s", "reload"),
		"listen 80;", fmt.Sprintf("listen 127.0.0.1:%d;", sitePort))
	etc := installEtc(t, r)
	for _, d := range []string{"conf.d", "snippets", "sites-enabled"} {
		if err := os.MkdirAll(filepath.Join(etcNginx, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Debian's nginx.conf includes conf.d/*.conf and sites-enabled/*.
	ngx.Start(t, nginxtest.Config{HTTP: fmt.Sprintf("    include %[1]s/conf.d/*.conf;\n    include %[1]s/sites-enabled/*;\n", etcNginx)})

	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "search_PRE got %s", r.URL.Path)
	}))
	t.Cleanup(backend.Close)
	addr := strings.TrimPrefix(backend.URL, "http://")
	host, port, _ := strings.Cut(addr, ":")
	etcd := etcdtest.Start(t)
	if _, err := etcd.Client(t).Put(t.Context(), "/search_PRE/"+host+"-"+port, addr); err != nil {
		t.Fatal(err)
	}

	unit := ini(t, filepath.Join("systemd", "rollcall-renderer.service"), "#")
	args := strings.Fields(strings.ReplaceAll(one(t, unit, "Service", "ExecStart"), "/etc/rollcall", etc))[1:]
	// The plain `nginx -s reload` that replaces nginx-reload is confirmed by
	// the renderer against this nginx's master.
	args = append(args, "--onetime", "--endpoints", etcd.Endpoint, "--metrics-addr=", "--nginx-pid", filepath.Join(ngx.Prefix, "nginx.pid"))
	cfg, err := renderer.ParseArgs(args, func(string) string { return "" })
	if err != nil {
		t.Fatalf("renderer %v: %v", args, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := renderer.Run(ctx, cfg, slog.New(slog.NewTextHandler(t.Output(), nil)), prometheus.NewRegistry()); err != nil {
		t.Fatalf("renderer %v: %v", args, err)
	}

	copyFile(t, filepath.Join("nginx", "rollcall.conf"), filepath.Join(etcNginx, "sites-enabled", "rollcall"), r)
	if err := ngx.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/search_PRE/api", sitePort)
	waitfor.Cond(t, 10*time.Second, "the site routes /search_PRE/ to the instance", func() error {
		resp, err := http.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if want := "search_PRE got /api"; resp.StatusCode != http.StatusOK || string(b) != want {
			return fmt.Errorf("GET %s = %d %q; want 200 %q", url, resp.StatusCode, b, want)
		}
		return nil
	})
}
