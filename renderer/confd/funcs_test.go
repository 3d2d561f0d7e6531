package confd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// newResource writes a one-resource confdir (conf.d/r.toml with the given
// [template] body lines, templates/t.tmpl with tmpl) and loads it.
func newResource(t testing.TB, fields, tmpl, globalPrefix string) (*Resource, error) {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"conf.d", "templates"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	toml := "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/out.conf\"\n" + fields + "\n"
	writeFile(t, filepath.Join(dir, "conf.d", "r.toml"), toml)
	writeFile(t, filepath.Join(dir, "templates", "t.tmpl"), tmpl)
	return Load(dir, filepath.Join(dir, "conf.d", "r.toml"), globalPrefix)
}

func writeFile(t testing.TB, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// renderString loads tmpl with keys ["/"] under prefix and renders kvs.
func renderString(t testing.TB, prefix, tmpl string, kvs []KV) (string, error) {
	t.Helper()
	r, err := newResource(t, `prefix = "`+prefix+`"`+"\nkeys = [\"/\"]", tmpl, "")
	if err != nil {
		t.Fatalf("load %q: %v", tmpl, err)
	}
	out, err := r.Render(kvs)
	return string(out.Bytes), err
}

// confdKVs is a small store in the shape of confd's examples.
var confdKVs = []KV{
	{Key: "/app/nginx/domain", Value: "example.com"},
	{Key: "/app/nginx/worker_processes", Value: "2"},
	{Key: "/app/upstream/app2", Value: "10.0.1.101:80"},
	{Key: "/app/upstream/app1", Value: "10.0.1.100:80"},
	{Key: "/app/upstream/app10", Value: "10.0.1.110:80"},
	{Key: "/app/services/web/cust1/1", Value: `{"IP": "10.0.0.1"}`},
	{Key: "/app/services/web/cust2/2", Value: `{"IP": "10.0.0.4"}`},
	{Key: "/app/services/web/cust1/2", Value: `{"IP": "10.0.0.2"}`},
	{Key: "/app/json/list", Value: `["a", "b", "c"]`},
	{Key: "/app/json/obj", Value: `{"animals": [{"type": "dog", "name": "Fido"}, {"type": "cat", "name": "Misse"}]}`},
	{Key: "/app/b64", Value: "VmFsdWU="},
	{Key: "/app/bool", Value: "true"},
	{Key: "/app/num", Value: "42"},
	{Key: "/app", Value: "the prefix itself"},
	{Key: "/application/x", Value: "outside the prefix"},
}

func TestFuncs(t *testing.T) {
	t.Setenv("ROLLCALL_TEST_ENV", "set")
	t.Setenv("ROLLCALL_TEST_EMPTY", "")
	exists := filepath.Join(t.TempDir(), "f")
	writeFile(t, exists, "")
	tests := []struct {
		name, tmpl, want string
	}{
		// memkv
		{"exists", `{{exists "/nginx/domain"}} {{exists "/nginx"}} {{exists "/nope"}}`, "true false false"},
		{"get", `{{with get "/nginx/domain"}}{{.Key}}={{.Value}}{{end}}`, "/nginx/domain=example.com"},
		{"get prefix itself", `{{getv "/"}}`, "the prefix itself"},
		{"gets", `{{range gets "/upstream/*"}}{{.Key}}={{.Value}} {{end}}`, "/upstream/app1=10.0.1.100:80 /upstream/app10=10.0.1.110:80 /upstream/app2=10.0.1.101:80 "},
		{"gets none", `{{len (gets "/none/*")}}`, "0"},
		{"gets nested star", `{{range gets "/services/web/*/*"}}{{.Key}} {{end}}`, "/services/web/cust1/1 /services/web/cust1/2 /services/web/cust2/2 "},
		{"getv", `{{getv "/nginx/worker_processes"}}`, "2"},
		{"getv default", `{{getv "/nope" "default_value"}}`, "default_value"},
		{"getv default unused", `{{getv "/nginx/domain" "default_value"}}`, "example.com"},
		{"getvs sorted values", `{{range getvs "/upstream/*"}}{{.}} {{end}}`, "10.0.1.100:80 10.0.1.101:80 10.0.1.110:80 "},
		{"ls", `{{range ls "/services/web"}}{{.}} {{end}}`, "cust1 cust2 "},
		{"ls leaf", `{{range ls "/nginx"}}{{.}} {{end}}`, "domain worker_processes "},
		{"ls key itself", `{{ls "/nginx/domain"}}`, "[domain]"},
		{"ls missing", `{{ls "/nope"}}`, "[]"},
		{"lsdir", `{{range lsdir "/services"}}{{.}} {{end}}|{{range lsdir "/services/web"}}{{.}} {{end}}`, "web |cust1 cust2 "},
		{"lsdir leaves only", `{{lsdir "/nginx"}}`, "[]"},
		// memkv v0.1.1 quirks, kept: "/" splits into two empty terms, so
		// lsdir "/" is always empty and ls "/" sees only top-level keys.
		{"lsdir root", `{{lsdir "/"}}`, "[]"},
		{"ls root", `{{ls "/"}}`, "[/ b64 bool num]"},
		// confd
		{"base dir", `{{base "/services/web/cust1"}} {{dir "/services/web/cust1"}}`, "cust1 /services/web"},
		{"split join", `{{$s := split (getv "/upstream/app1") ":"}}{{index $s 0}} {{index $s 1}} {{join $s "|"}}`, "10.0.1.100 80 10.0.1.100|80"},
		{"json", `{{$d := json (getv "/json/obj")}}{{(index $d.animals 1).name}}{{range $d.animals}} {{.type}}{{end}}`, "Misse dog cat"},
		{"json in gets", `{{range gets "/services/web/cust1/*"}}{{$d := json .Value}}{{$d.IP}} {{end}}`, "10.0.0.1 10.0.0.2 "},
		{"jsonArray", `{{range jsonArray (getv "/json/list")}}{{.}}{{end}}`, "abc"},
		{"map", `{{$m := map "name" "es" "port" 9200}}{{index $m "name"}}:{{index $m "port"}}`, "es:9200"},
		{"map empty", `{{len (map)}}`, "0"},
		{"getenv", `{{getenv "ROLLCALL_TEST_ENV"}}`, "set"},
		{"getenv missing", `[{{getenv "ROLLCALL_TEST_UNSET_XYZ"}}]`, "[]"},
		{"getenv default", `{{getenv "ROLLCALL_TEST_UNSET_XYZ" "d"}}`, "d"},
		{"getenv default on empty", `{{getenv "ROLLCALL_TEST_EMPTY" "d"}}`, "d"},
		{"getenv default unused", `{{getenv "ROLLCALL_TEST_ENV" "d"}}`, "set"},
		{"datetime", `{{(datetime).Year | printf "%T"}}`, "int"},
		{"datetime format", `{{len (datetime.Format "2006")}}`, "4"},
		{"toUpper toLower", `{{toUpper "aBc"}} {{toLower "aBc"}}`, "ABC abc"},
		{"contains", `{{contains "foobar" "oba"}} {{contains "foo" "x"}}`, "true false"},
		{"replace", `{{replace "a-b-c" "-" "_" -1}} {{replace "a-b-c" "-" "_" 1}}`, "a_b_c a_b-c"},
		{"trimSuffix", `{{trimSuffix "upstream.conf" ".conf"}}`, "upstream"},
		{"lookupIP localhost", `{{range lookupIP "localhost"}}{{if eq . "127.0.0.1"}}ok{{end}}{{end}}`, "ok"},
		{"lookupIP error is empty", `{{len (lookupIP "")}}`, "0"},
		{"lookupIPV4", `{{range lookupIPV4 "localhost"}}{{if contains . ":"}}v6!{{end}}{{end}}{{range lookupIPV4 "localhost"}}{{if eq . "127.0.0.1"}}ok{{end}}{{end}}`, "ok"},
		{"lookupIPV6", `{{range lookupIPV6 "localhost"}}{{if contains . "."}}v4!{{end}}{{end}}.`, "."},
		{"lookupSRV error is empty", `{{len (lookupSRV "x" "tcp" "bad..name")}}`, "0"},
		{"fileExists", `{{fileExists "` + exists + `"}} {{fileExists "` + exists + `.no"}}`, "true false"},
		{"base64Encode", `{{base64Encode "Value"}}`, "VmFsdWU="},
		{"base64Decode", `{{base64Decode (getv "/b64")}}`, "Value"},
		{"parseBool", `{{if parseBool (getv "/bool")}}yes{{end}} {{parseBool "0"}}`, "yes false"},
		{"reverse strings", `{{reverse (getvs "/upstream/*")}}`, "[10.0.1.110:80 10.0.1.101:80 10.0.1.100:80]"},
		{"reverse ls", `{{range reverse (ls "/services/web")}}{{.}} {{end}}`, "cust2 cust1 "},
		// confd quirk kept: gets returns memkv.KVPairs, which confd's reverse does not match.
		{"reverse gets unchanged", `{{range reverse (gets "/services/web/cust1/*")}}{{base .Key}}{{end}}`, "12"},
		{"reverse kv slice", `{{range reverse (sortKVByLength (gets "/services/web/cust1/*"))}}{{base .Key}}{{end}}`, "21"},
		{"reverse other", `{{reverse 3}}`, "3"},
		{"sortByLength", `{{sortByLength (split "ccc,a,bb,b" ",")}}`, "[a b bb ccc]"},
		{"sortKVByLength", `{{range sortKVByLength (gets "/upstream/*")}}{{.Key}} {{end}}`, "/upstream/app1 /upstream/app2 /upstream/app10 "},
		{"add sub mul div mod", `{{add 2 3}} {{sub 2 3}} {{mul 2 3}} {{div 7 2}} {{mod 7 2}}`, "5 -1 6 3 1"},
		{"arith on atoi", `{{add (atoi (getv "/num")) 1}}`, "43"},
		{"seq", `{{seq 3 5}} {{range seq 1 2}}{{.}}{{end}}`, "[3 4 5] 12"},
		{"seq empty", `{{len (seq 5 3)}}`, "0"},
		{"seq one", `{{seq 1 1}}`, "[1]"},
		{"atoi", `{{atoi "-12"}}`, "-12"},
		// Data is nil, as in confd.
		{"dot is nil", `{{.}}`, "<no value>"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := renderString(t, "/app", tc.tmpl, confdKVs)
			if err != nil || got != tc.want {
				t.Errorf("render %s = %q, %v; want %q", tc.tmpl, got, err, tc.want)
			}
		})
	}
}

func TestFuncErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, tmpl, want string
	}{
		{"get missing", `{{get "/nope"}}`, "key does not exist: /nope"},
		{"getv missing", "\n\n{{getv \"/nope\"}}", ":3:2: executing"},
		{"gets bad pattern", `{{gets "/["}}`, "syntax error in pattern"},
		{"getvs bad pattern", `{{getvs "/["}}`, "syntax error in pattern"},
		{"json bad", `{{json "{"}}`, "unexpected end of JSON input"},
		{"jsonArray bad", `{{jsonArray "{}"}}`, "cannot unmarshal object"},
		{"map odd", `{{map "a"}}`, "invalid map call"},
		{"map key", `{{map 1 2}}`, "map keys must be strings"},
		{"base64Decode bad", `{{base64Decode "!!"}}`, "illegal base64"},
		{"parseBool bad", `{{parseBool "maybe"}}`, "invalid syntax"},
		{"atoi bad", `{{atoi "x"}}`, "invalid syntax"},
		{"div by zero", `{{div 1 0}}`, "division by zero"},
		{"mod by zero", `{{mod 1 0}}`, "division by zero"},
		{"seq too long", `{{seq 1 100000000}}`, "more than"},
		{"seq extreme", `{{seq -9223372036854775808 9223372036854775807}}`, "more than"},
		{"service without app prefix", `{{service}}`, "does not end in /<app>_<env>"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := renderString(t, "/app", tc.tmpl, confdKVs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("render %s = %q, %v; want error containing %q", tc.tmpl, got, err, tc.want)
			}
			// Every execution error names the template file and line.
			if !strings.Contains(err.Error(), filepath.Join("templates", "t.tmpl:")) {
				t.Errorf("error %q does not name the template file:line", err)
			}
		})
	}
}

// TestKeyRelativity: store keys are relative to the prefix exactly as
// confd's setVars makes them: path.Join("/", strings.TrimPrefix(key, prefix)).
func TestKeyRelativity(t *testing.T) {
	t.Parallel()
	kvs := []KV{
		{Key: "/app_prod/10.0.0.1-80", Value: "a"},
		{Key: "/app_prod", Value: "dir value"},
		{Key: "/app_production/10.0.0.2-80", Value: "b"},
		{Key: "/other/x", Value: "c"},
	}
	all := `{{range gets "/*"}}{{.Key}}={{.Value}};{{end}}{{range gets "/*/*"}}{{.Key}}={{.Value}};{{end}}`
	tests := []struct {
		name, fields, global, want string
	}{
		{"prefix and root key", `prefix = "/app_prod"` + "\nkeys = [\"/\"]", "", "/=dir value;/10.0.0.1-80=a;"},
		{"prefix without slash", `prefix = "app_prod"` + "\nkeys = [\"/\"]", "", "/=dir value;/10.0.0.1-80=a;"},
		// confd keeps the trailing "/" for TrimPrefix: the prefix key itself is not trimmed.
		{"prefix with trailing slash", `prefix = "/app_prod/"` + "\nkeys = [\"/\"]", "", "/10.0.0.1-80=a;/app_prod=dir value;"},
		{"empty key", `prefix = "/app_prod"` + "\nkeys = [\"\"]", "", "/=dir value;/10.0.0.1-80=a;"},
		{"no prefix", `keys = ["/app_prod"]`, "", "/app_prod=dir value;/app_prod/10.0.0.1-80=a;"},
		{"root keys see all", `keys = ["/"]`, "", "/app_prod=dir value;/app_prod/10.0.0.1-80=a;/app_production/10.0.0.2-80=b;/other/x=c;"},
		{"two keys", `keys = ["/app_prod", "/other"]`, "", "/app_prod=dir value;/app_prod/10.0.0.1-80=a;/other/x=c;"},
		{"key below prefix", `prefix = "/app_prod"` + "\nkeys = [\"/10.0.0.1-80\"]", "", "/10.0.0.1-80=a;"},
		{"global prefix replaces", `prefix = "/other"` + "\nkeys = [\"/\"]", "/app_prod", "/=dir value;/10.0.0.1-80=a;"},
		{"global prefix without slash", `prefix = "/other"` + "\nkeys = [\"/\"]", "app_prod", "/=dir value;/10.0.0.1-80=a;"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := newResource(t, tc.fields, all, tc.global)
			if err != nil {
				t.Fatal(err)
			}
			out, err := r.Render(kvs)
			if err != nil || string(out.Bytes) != tc.want {
				t.Errorf("render with %s (global %q) = %q, %v; want %q", tc.fields, tc.global, out.Bytes, err, tc.want)
			}
		})
	}
}
