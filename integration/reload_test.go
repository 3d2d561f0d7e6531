package integration_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/rollcall/rollcall/internal/waitfor"
)

// TestReloadRefusedAtApply: a config that passes `nginx -t` but that nginx
// cannot apply (a listen on a port in use) makes `nginx -s reload` exit 0.
// Whether the reload_cmd is nginx-reload or a plain `nginx -s reload` that
// the renderer confirms itself (--nginx-pid), the reload counts as failed,
// the revision is not acknowledged, /readyz is 503, the log carries nginx's
// [emerg] line, nginx keeps the old config, and the reload is retried until
// nginx applies it.
func TestReloadRefusedAtApply(t *testing.T) {
	t.Parallel()
	for _, plain := range []bool{false, true} {
		name := map[bool]string{false: "nginx-reload", true: "plain nginx -s reload"}[plain]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testReloadRefused(t, plain)
		})
	}
}

func testReloadRefused(t *testing.T, plain bool) {
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
	reload, flags := r.reloadCmd, []string(nil)
	if plain {
		reload = r.nginx.CommandLine("-s", "reload")
		flags = []string{"--nginx-pid", filepath.Join(r.nginx.Prefix, "nginx.pid"), "--nginx-error-log", filepath.Join(r.nginx.Prefix, "error.log")}
	}
	res := map[string]any{"template": map[string]any{
		"src": "listen.tmpl", "dest": dest, "keys": []string{"/listen"}, "mode": "0644",
		"check_cmd": r.checkCmd, "reload_cmd": reload,
	}}
	f := filepath.Join(r.confdir, "conf.d", "listen.toml")
	var b []byte
	if b, err = toml.Marshal(res); err != nil {
		t.Fatal(err)
	}
	writeFile(t, f, string(b), 0o644)
	writeFile(t, dest, "\n", 0o644)
	r.startShipped(dest)
	r.startRenderer(flags...)
	r.waitReady(10 * time.Second)

	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	defer cancel()
	put, err := r.kv.Put(ctx, "/listen/on", "1")
	if err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 10*time.Second, "refused reload not counted as failed", func() error {
		if m := r.metric("rollcall_renderer_reloads_total", `result="failure"`); m < 1 {
			return fmt.Errorf("reloads_total{result=failure} = %v", m)
		}
		return nil
	})
	if _, err := r.get("/readyz"); err == nil {
		t.Error("/readyz is 200 while nginx runs the old config")
	}
	if m := r.metric("rollcall_renderer_applied_revision"); m >= float64(put.Header.Revision) {
		t.Errorf("applied_revision = %v: the refused revision %d is acknowledged", m, put.Header.Revision)
	}
	if log := r.renderer.Output(); !strings.Contains(log, "[emerg]") || !strings.Contains(log, "Address already in use") {
		t.Errorf("the renderer's log does not quote nginx's [emerg] line:\n%s", log)
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
	r.waitAck(10*time.Second, put.Header.Revision)
	if m := r.metric("rollcall_renderer_reloads_total", `result="ok"`); m < 1 {
		t.Fatalf("reloads_total{result=ok} = %v after the retry", m)
	}
}
