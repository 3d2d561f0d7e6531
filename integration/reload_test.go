package integration_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/rollcall/rollcall/internal/waitfor"
)

// TestReloadRefusedAtApply: a config that passes `nginx -t` but that nginx
// cannot apply (a listen on a port in use) makes `nginx -s reload` exit 0;
// through nginx-reload the renderer counts the reload as failed, nginx keeps
// the old config, and the reload is retried until nginx applies it.
func TestReloadRefusedAtApply(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().String()
	dest := filepath.Join(r.out, "listen.conf")
	writeFile(t, filepath.Join(r.confdir, "templates", "listen.tmpl"),
		fmt.Sprintf("{{if exists \"/listen/on\"}}server { listen %s; return 200 \"new\"; }{{end}}\n", addr), 0o644)
	res := map[string]any{"template": map[string]any{
		"src": "listen.tmpl", "dest": dest, "keys": []string{"/listen"}, "mode": "0644",
		"check_cmd": r.checkCmd, "reload_cmd": r.reloadCmd,
	}}
	f := filepath.Join(r.confdir, "conf.d", "listen.toml")
	var b []byte
	if b, err = toml.Marshal(res); err != nil {
		t.Fatal(err)
	}
	writeFile(t, f, string(b), 0o644)
	writeFile(t, dest, "\n", 0o644)
	r.startShipped(dest)
	r.startRenderer()
	r.waitReady(10 * time.Second)

	r.put("/listen/on", "1")
	waitfor.Cond(t, 10*time.Second, "refused reload not counted as failed", func() error {
		if m := r.metric("rollcall_renderer_reloads_total", `result="failure"`); m < 1 {
			return fmt.Errorf("reloads_total{result=failure} = %v", m)
		}
		return nil
	})
	if _, err := r.get("/readyz"); err == nil {
		t.Error("/readyz is 200 while nginx runs the old config")
	}
	resp, err := r.http.Get(r.nginx.URL("/_ready"))
	if err != nil {
		t.Fatalf("nginx stopped serving: %v", err)
	}
	resp.Body.Close()

	l.Close() // the port is free: the retried reload applies
	waitfor.Cond(t, 15*time.Second, "retried reload not applied", func() error {
		resp, err := r.http.Get("http://" + addr + "/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || string(body) != "new" {
			return fmt.Errorf("GET %s: %s %q", addr, resp.Status, body)
		}
		return nil
	})
	r.waitReady(10 * time.Second)
	if m := r.metric("rollcall_renderer_reloads_total", `result="ok"`); m < 1 {
		t.Fatalf("reloads_total{result=ok} = %v after the retry", m)
	}
}
