package confd

import (
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad: the conf.d loader on any TOML and template text. It never
// panics; a resource it accepts has a dest, a src inside nothing but what
// it names, an absolute prefix, and clean absolute watch prefixes that it
// touches; an error names the file.
func FuzzLoad(f *testing.F) {
	for _, seed := range [][2]string{
		{"[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x.conf\"\nkeys = [\"/\"]\n", "{{range services}}{{.Name}}{{end}}"},
		{"[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x.conf\"\nprefix = \"search_PRE\"\nkeys = [\"/\", \"/a/../b\"]\nmode = \"0644\"\nwait = \"1s:4s\"\n", "{{getv \"/x\" \"d\"}}"},
		{"[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x.conf\"\nmode = \"644\"\n", ""},
		{"[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x.conf\"\ncheck_cmd = \"nginx -t -c {{.src}\"\n", ""},
		{"[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x.conf\"\nuid = 0\nowner = \"nobody\"\n", ""},
		{"[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x.conf\"\nunknown = 1\n", ""},
		{"[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x.conf\"\nkeys = [\"\", \"//\", \"a b\"]\n", "{{range services}\n"},
		{"[template", ""},
		{"[other]\n", ""},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, toml, tmpl string) {
		dir := t.TempDir()
		for _, d := range []string{"conf.d", "templates"} {
			if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		file := filepath.Join(dir, "conf.d", "r.toml")
		if err := os.WriteFile(file, []byte(toml), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "templates", "t.tmpl"), []byte(tmpl), 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := Load(dir, file, "")
		if err != nil {
			if !strings.Contains(err.Error(), file) {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if r.Dest == "" || r.Src == "" || !strings.HasPrefix(r.Prefix, "/") {
			t.Fatalf("Load accepted dest %q src %q prefix %q", r.Dest, r.Src, r.Prefix)
		}
		for _, p := range r.WatchPrefixes() {
			if !strings.HasPrefix(p, "/") || path.Clean(p) != p || !r.Touches(p) {
				t.Fatalf("watch prefix %q (prefix %q, keys %q)", p, r.Prefix, r.Keys)
			}
		}
	})
}
