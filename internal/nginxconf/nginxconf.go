// Package nginxconf describes a private nginx — its own prefix, one loopback
// port — as the demo, the bench and the tests run it: where the binary is,
// the nginx.conf, and the command line that points nginx at that prefix. It
// starts nothing (the demo and the bench supervise nginx with internal/proc,
// the tests with internal/nginxtest).
package nginxconf

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Lookup finds the nginx binary: on PATH, else where Debian installs it
// (/usr/sbin is often missing from a user's PATH).
func Lookup() (string, error) {
	bin, err := exec.LookPath("nginx")
	if err == nil {
		return bin, nil
	}
	for _, p := range []string{"/usr/sbin/nginx", "/sbin/nginx"} {
		if _, serr := os.Stat(p); serr == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("nginx not installed: %w", errors.Join(err, errors.New("not in /usr/sbin or /sbin either")))
}

// Instance is one private nginx.
type Instance struct {
	Bin    string // the nginx binary
	Prefix string // nginx -p: nginx.conf, nginx.pid, error.log, temp paths
	Conf   string // path of nginx.conf
	Port   int    // the main server's 127.0.0.1 port
}

// Args are the flags that point nginx at this instance: -p, -c, -e.
func (i Instance) Args(extra ...string) []string {
	return append([]string{"-p", i.Prefix, "-c", i.Conf, "-e", "stderr"}, extra...)
}

// CommandLine is a shell-ready nginx command for this instance, e.g.
// CommandLine("-t", "-q") for a check_cmd or CommandLine("-s", "reload").
func (i Instance) CommandLine(extra ...string) string {
	return i.Bin + " " + strings.Join(i.Args(extra...), " ")
}

// URL is http://127.0.0.1:Port + path.
func (i Instance) URL(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", i.Port, path)
}

// Conf is what is spliced into the instance's nginx.conf.
type Conf struct {
	Main    string // main context, e.g. ModulesConf to load the Lua module
	Workers int    // worker_processes; 0 means 1
	HTTP    string // inside http { }, e.g. include lines for rendered files
	Server  string // inside the main server { listen 127.0.0.1:Port; }
	Ready   string // the body GET /_ready answers (200): tells this instance from another on the port
}

// WriteConf writes nginx.conf: in the foreground (daemon off), one worker
// unless c.Workers says otherwise,
// errors to stderr and to <prefix>/error.log, every path in the prefix.
func (i Instance) WriteConf(c Conf) error {
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // workers could not read a temp dir otherwise
	}
	conf := fmt.Sprintf(`%s
%[7]s
daemon off;
worker_processes %[8]d;
worker_shutdown_timeout 5s;
pid %[2]s/nginx.pid;
error_log stderr notice;
error_log %[2]s/error.log notice;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %[2]s/body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
%[3]s
    server {
        listen 127.0.0.1:%[4]d;
        location = /_ready { return 200 %[6]q; }
%[5]s
    }
}
`, user, i.Prefix, c.HTTP, i.Port, c.Server, c.Ready, c.Main, max(c.Workers, 1))
	if err := os.WriteFile(i.Conf, []byte(conf), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", i.Conf, err)
	}
	return nil
}

// ModulesConf, in Conf.Main, loads the dynamic modules Debian enables (the
// Lua module among them), as Debian's own nginx.conf does.
const ModulesConf = "include /etc/nginx/modules-enabled/*.conf;"

// debianModules is where Debian installs nginx's dynamic modules.
const debianModules = "/usr/lib/nginx/modules"

// HasLua reports whether Debian's Lua module (libnginx-mod-http-lua) is
// installed.
func HasLua() bool {
	_, err := os.Stat(filepath.Join(debianModules, "ngx_http_lua_module.so"))
	return err == nil
}

// LinkModules links <prefix>/modules to Debian's modules directory: Debian's
// modules-enabled files name modules relative to the prefix
// ("modules/ngx_http_lua_module.so"), and a private nginx has its own.
// Without Debian's directory it does nothing.
func LinkModules(prefix string) error {
	if _, err := os.Stat(debianModules); err != nil {
		return nil
	}
	if err := os.Symlink(debianModules, filepath.Join(prefix, "modules")); err != nil {
		return fmt.Errorf("link nginx modules: %w", err)
	}
	return nil
}
