package integration_test

import (
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/nginxtest"
	"github.com/rollcall/rollcall/internal/waitfor"
)

// TestInjectionThroughGetvs: a confd setup as it is (a getvs upstream
// template, plain `nginx -s reload`) behind real nginx. A registered value
// carrying nginx directives — on a new instance key, or replacing a valid
// instance's value — is never served: the injected server never listens,
// the file never holds it, and the legitimate route keeps answering 200.
func TestInjectionThroughGetvs(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	const svc = "inj_test"
	writeFile(t, filepath.Join(r.confdir, "templates", "getvs.tmpl"), `upstream `+svc+` {
{{- range getvs "/`+svc+`/*"}}
    server {{.}};
{{- else}}
    server 127.0.0.1:1 down;
{{- end}}
}
`, 0o644)
	dest := filepath.Join(r.out, "getvs.conf")
	writeFile(t, filepath.Join(r.confdir, "conf.d", "getvs.toml"), fmt.Sprintf(`[template]
src = "getvs.tmpl"
dest = %q
keys = ["/%s"]
check_cmd = %q
reload_cmd = %q
`, dest, svc, r.checkCmd, r.nginx.CommandLine("-s", "reload")), 0o644)
	writeFile(t, dest, "upstream "+svc+" { server 127.0.0.1:1 down; }\n", 0o644)
	r.startNginx(nginxtest.Config{
		HTTP:   "include " + dest + ";\n",
		Server: fmt.Sprintf("location /%s/ { proxy_pass http://%[1]s/; proxy_next_upstream off; }\n", svc),
	})
	r.startRenderer("--nginx-pid", filepath.Join(r.nginx.Prefix, "nginx.pid"),
		"--nginx-error-log", filepath.Join(r.nginx.Prefix, "error.log"))
	bs := r.serve(10*time.Second, svc, "b1", "b2")

	port := injectPort(t)
	evil := fmt.Sprintf("127.0.0.1:1; } server { listen 127.0.0.1:%d; return 200 injected; } upstream z { server 127.0.0.1:2", port)
	offset := len(r.renderer.Output())
	r.put("/"+svc+"/127.0.0.1-1", evil)                                                                       // a new instance key
	r.put(instanceKey(t, svc, bs[1].addr), strings.Replace(evil, "127.0.0.1:1;", bs[1].addr.String()+";", 1)) // a valid one turned
	r.logSince(10*time.Second, offset, regexp.MustCompile(`(?s)withheld.*withheld`))
	r.waitServed(10*time.Second, svc, "b1") // b2's key now carries no valid address: withdrawn

	// For a while (several renders and reloads of other changes), nothing
	// injected is ever served and the route keeps answering.
	deadline := time.Now().Add(3 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		r.put(fmt.Sprintf("/%s/cfg/n", svc), fmt.Sprint(i)) // renders again (under keys, below getvs' glob)
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond); err == nil {
			c.Close()
			t.Fatalf("the injected server listens on %d", port)
		}
		if err := r.servedBy(svc, "b1"); err != nil {
			t.Fatalf("the legitimate route: %v", err)
		}
		if conf := read(t, dest); strings.Contains(conf, "injected") || strings.Contains(conf, "listen") {
			t.Fatalf("%s holds the injected value:\n%s", dest, conf)
		}
	}
	waitfor.Cond(t, 5*time.Second, "withheld values counted once per key", func() error {
		if m := r.metric("rollcall_renderer_invalid_values_skipped_total"); m != 2 {
			return fmt.Errorf("invalid_values_skipped_total = %v; want 2", m)
		}
		return nil
	})
}
