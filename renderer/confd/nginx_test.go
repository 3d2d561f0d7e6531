package confd

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/nginxtest"
	"github.com/rollcall/rollcall/internal/waitfor"
)

// TestShippedTemplatesWithNginx serves the shipped upstreams and proxy
// templates from a real nginx: an app with no instances answers 502, and a
// dead instance's requests are retried on a live one.
func TestShippedTemplatesWithNginx(t *testing.T) {
	if testing.Short() {
		t.Skip("nginx in -short")
	}
	s := nginxtest.New(t)
	t.Parallel()

	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "live %s", r.URL.Path)
	}))
	t.Cleanup(live.Close)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String() // refused once closed
	l.Close()

	kvs := []KV{}
	for _, addr := range []string{live.Listener.Addr().String(), dead} {
		ip, port, _ := net.SplitHostPort(addr)
		kvs = append(kvs, KV{Key: "/web_prod/" + ip + "-" + port, Value: addr})
	}
	// Both apps are listed, so search_PRE exists with no instances.
	root := repoRoot(t)
	fields := "keys = [\"/search_PRE\", \"/web_prod\"]\n"
	render := func(src, dest string) string {
		res := filepath.Join(t.TempDir(), "r.toml")
		writeFile(t, res, fmt.Sprintf("[template]\nsrc = %q\ndest = %q\n%s", src, dest, fields))
		r, err := Load(root, res, "")
		if err != nil {
			t.Fatal(err)
		}
		out, err := r.Render(kvs)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, dest, string(out.Bytes))
		return dest
	}
	up := render("upstreams.tmpl", filepath.Join(s.Prefix, "upstreams.conf"))
	proxy := render("proxy.tmpl", filepath.Join(s.Prefix, "proxy.conf"))
	s.Start(t, nginxtest.Config{HTTP: "include " + up + ";", Server: "include " + proxy + ";"})

	get := func(path string) (int, string, error) {
		c := &http.Client{Timeout: 10 * time.Second}
		resp, err := c.Get(s.URL(path))
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	waitfor.Cond(t, 5*time.Second, "zero-instance app answers 502", func() error {
		code, body, err := get("/search_PRE/x")
		if err != nil || code != http.StatusBadGateway {
			return fmt.Errorf("got %d %q, %v; want 502", code, body, err)
		}
		return nil
	})
	for i := range 20 {
		code, body, err := get(fmt.Sprintf("/web_prod/r%d", i))
		if want := fmt.Sprintf("live /r%d", i); err != nil || code != http.StatusOK || body != want {
			t.Fatalf("request %d through nginx with a dead instance = %d %q, %v; want 200 %q", i, code, body, err, want)
		}
	}
	if code, _, err := get("/other_prod/"); err != nil || code != http.StatusNotFound {
		t.Errorf("unknown app = %d, %v; want 404", code, err)
	}
}
