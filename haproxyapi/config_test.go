package haproxyapi

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/rollcall/rollcall/internal/haproxytest"
)

var update = flag.Bool("update", false, "rewrite testdata/*.cfg")

// shippedTemplate is haproxy/runtime/templates/haproxy-slots.tmpl.
const shippedTemplate = "../haproxy/runtime/templates/haproxy-slots.tmpl"

// TestRenderConfigGolden renders the shipped config template for two apps
// (one with a draining slot and an IPv6 instance) and one with no instance,
// compares with testdata/slots.cfg, and runs `haproxy -c` on it when
// HAProxy is installed.
func TestRenderConfigGolden(t *testing.T) {
	text, err := os.ReadFile(shippedTemplate)
	if err != nil {
		t.Fatal(err)
	}
	l := layout("web_prod: 10.0.0.1:8080 -10.0.0.2:8080 [::1]:8081 . . . . .", "api_prod: . . . . . . . .", "empty_test: -10.0.0.3:80")
	got, err := RenderConfig(shippedTemplate, string(text), l)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := RenderConfig(shippedTemplate, string(text), l)
	if !bytes.Equal(got, again) {
		t.Fatal("two renders differ")
	}
	golden := filepath.Join("testdata", "slots.cfg")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("rendered config differs from %s (go test -update rewrites it):\n%s", golden, got)
	}
	if testing.Short() {
		return
	}
	bin := haproxytest.Lookup(t)
	if out, err := haproxytest.Check(t, bin, golden); err != nil {
		t.Errorf("haproxy -c %s: %v\n%s", golden, err, out)
	}
}

// TestShape: servers moving between slots keep the shape; a slot more, an
// app more or a template edit change it.
func TestShape(t *testing.T) {
	render := func(text string, l Layout) string {
		b, err := RenderConfig("t", text, l)
		if err != nil {
			t.Fatal(err)
		}
		return Shape(b)
	}
	const tmpl = "{{range .Backends}}backend {{.Name}}\n{{range .Servers}}  server {{.Name}} {{.Addr}}{{if not .Ready}} disabled{{end}}\n{{end}}{{end}}"
	base := render(tmpl, layout("a_x: 10.0.0.1:80 ."))
	if base == "" {
		t.Fatal("no shape line")
	}
	for name, s := range map[string]string{
		"servers moved": render(tmpl, layout("a_x: -10.0.0.1:80 10.0.0.2:80")),
	} {
		if s != base {
			t.Errorf("%s: shape %s; want %s", name, s, base)
		}
	}
	for name, s := range map[string]string{
		"a slot more":   render(tmpl, layout("a_x: 10.0.0.1:80 . .")),
		"an app more":   render(tmpl, layout("a_x: 10.0.0.1:80 .", "b_x: .")),
		"template edit": render("# edited\n"+tmpl, layout("a_x: 10.0.0.1:80 .")),
	} {
		if s == base {
			t.Errorf("%s: same shape %s", name, s)
		}
	}
	if got := Shape([]byte("# placeholder\n")); got != "" {
		t.Errorf("Shape(placeholder) = %q; want \"\"", got)
	}
}

// TestDataAddresses: a ready slot's address must be canonical; a slot in
// maint whose address is not (read back from HAProxy) is written blank.
func TestDataAddresses(t *testing.T) {
	odd := ap("[::ffff:10.0.0.1]:80")
	d, err := Data(Layout{"a_x": {{Addr: odd}, {Addr: ap("10.0.0.2:80"), Ready: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Backends[0].Servers; got[0].Addr != "0.0.0.0:0" || got[1].Addr != "10.0.0.2:80" {
		t.Errorf("Data servers %+v; want 0.0.0.0:0 and 10.0.0.2:80", got)
	}
	if _, err := Data(Layout{"a_x": {{Addr: odd, Ready: true}}}); err == nil {
		t.Errorf("Data with ready slot %s: no error", odd)
	}
	if _, err := Data(Layout{"a x": nil}); err == nil {
		t.Error("Data with backend \"a x\": no error")
	}
}
