package renderer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfdirSubdirectories: resources in subdirectories of conf.d/ load
// (confd walks it recursively) and are watched live, new subdirectories
// included; templates in subdirectories of templates/ too. Unknown fields
// load with a warning naming the file.
func TestConfdirSubdirectories(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	res := func(src, dest, extra string) string {
		return fmt.Sprintf("[template]\nsrc = %q\ndest = %q\nkeys = [\"/\"]\n%s", src, dest, extra)
	}
	for _, d := range []string{"conf.d/nginx", "templates/nginx"} {
		if err := os.Mkdir(filepath.Join(h.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	a := filepath.Join(h.out, "a.conf")
	h.write("templates/nginx/a.tmpl", "a "+listTmpl)
	h.write("conf.d/nginx/a.toml", res("nginx/a.tmpl", a, "colour = \"blue\"\n"))
	h.put(key("web_prod", "10.0.0.1", 80), "10.0.0.1:80")
	h.start()
	h.waitFile(a, "a web_prod: 10.0.0.1:80\n")
	if logs := h.logs.String(); !strings.Contains(logs, `unknown field \"template.colour\" ignored`) || !strings.Contains(logs, "nginx/a.toml") {
		t.Errorf("no warning naming nginx/a.toml and its unknown field in the log:\n%s", logs)
	}

	// An edit to a template in a subdirectory.
	h.write("templates/nginx/a.tmpl", "a2 "+listTmpl)
	h.waitFile(a, "a2 web_prod: 10.0.0.1:80\n")

	// A new subdirectory two levels down, then a resource written into it.
	if err := os.MkdirAll(filepath.Join(h.dir, "conf.d/apps/web"), 0o755); err != nil {
		t.Fatal(err)
	}
	b := filepath.Join(h.out, "b.conf")
	h.write("templates/b.tmpl", "b "+listTmpl)
	// Written at once: either the watch on the new directory sees it, or the
	// reload its creation triggers (100ms later) finds it.
	h.write("conf.d/apps/web/b.toml", res("b.tmpl", b, ""))
	h.waitFile(b, "b web_prod: 10.0.0.1:80\n")
	// Now certainly watched: an edit there is seen.
	h.write("conf.d/apps/web/b.toml", res("nginx/a.tmpl", b, ""))
	h.waitFile(b, "a2 web_prod: 10.0.0.1:80\n")

	// A directory moved in with its resource already inside.
	staging := filepath.Join(h.out, "moved")
	if err := os.Mkdir(staging, 0o755); err != nil {
		t.Fatal(err)
	}
	c := filepath.Join(h.out, "c.conf")
	if err := os.WriteFile(filepath.Join(staging, "c.toml"), []byte(res("b.tmpl", c, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(staging, filepath.Join(h.dir, "conf.d/moved")); err != nil {
		t.Fatal(err)
	}
	h.waitFile(c, "b web_prod: 10.0.0.1:80\n")

	// And the new subdirectory is watched: an edit there is seen.
	h.write("conf.d/moved/c.toml", res("nginx/a.tmpl", c, ""))
	h.waitFile(c, "a2 web_prod: 10.0.0.1:80\n")
	h.put(key("web_prod", "10.0.0.2", 80), "10.0.0.2:80")
	h.waitFile(a, "a2 web_prod: 10.0.0.1:80 10.0.0.2:80\n")
	h.waitFile(c, "a2 web_prod: 10.0.0.1:80 10.0.0.2:80\n")
	if strings.Contains(h.logs.String(), "resource failed to load") {
		t.Error(errors.New("a resource failed to load"))
	}
}
