package confd

import (
	"errors"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestLoadFields(t *testing.T) {
	t.Parallel()
	root, err := user.LookupId("0")
	if err != nil {
		t.Skipf("no uid 0 in the user database: %v", err)
	}
	rootGroup, err := user.LookupGroupId("0")
	if err != nil {
		t.Skipf("no gid 0 in the group database: %v", err)
	}
	tests := []struct {
		name, fields string
		check        func(r *Resource) bool
	}{
		{"defaults", ``, func(r *Resource) bool {
			return r.Prefix == "/" && r.Keys == nil && r.Mode == 0 && r.UID == -1 && r.GID == -1 &&
				r.CheckCmd == "" && r.ReloadCmd == "" && r.Wait == nil && r.Dest == "/tmp/out.conf" &&
				filepath.IsAbs(r.Src) && strings.HasSuffix(r.Src, filepath.Join("templates", "t.tmpl"))
		}},
		{"keys", `keys = ["/a", "/b/"]`, func(r *Resource) bool { return reflect.DeepEqual(r.Keys, []string{"/a", "/b/"}) }},
		{"prefix", `prefix = "/p"`, func(r *Resource) bool { return r.Prefix == "/p" }},
		{"prefix gets a slash", `prefix = "p"`, func(r *Resource) bool { return r.Prefix == "/p" }},
		{"mode", `mode = "0640"`, func(r *Resource) bool { return r.Mode == 0o640 }},
		{"mode 0o", `mode = "0o600"`, func(r *Resource) bool { return r.Mode == 0o600 }},
		{"mode decimal, as confd reads it", `mode = "420"`, func(r *Resource) bool { return r.Mode == 0o644 }},
		{"uid gid", "uid = 12\ngid = 34", func(r *Resource) bool { return r.UID == 12 && r.GID == 34 }},
		{"uid 0", "uid = 0", func(r *Resource) bool { return r.UID == 0 && r.GID == -1 }},
		{"owner group", `owner = "` + root.Username + `"` + "\n" + `group = "` + rootGroup.Name + `"`, func(r *Resource) bool { return r.UID == 0 && r.GID == 0 }},
		{"owner agrees with uid", `owner = "` + root.Username + `"` + "\nuid = 0", func(r *Resource) bool { return r.UID == 0 }},
		{"check_cmd reload_cmd", `check_cmd = "nginx -t -c {{.src}}"` + "\n" + `reload_cmd = "nginx -s reload"`, func(r *Resource) bool {
			return r.CheckCmd == "nginx -t -c {{.src}}" && r.ReloadCmd == "nginx -s reload"
		}},
		{"wait", `wait = "2s:10s"`, func(r *Resource) bool { return *r.Wait == Wait{2 * time.Second, 10 * time.Second} }},
		{"wait min only", `wait = "1s"`, func(r *Resource) bool { return *r.Wait == Wait{time.Second, 4 * time.Second} }},
		{"push", `push = "http://127.0.0.1:8089/rollcall/peers"`, func(r *Resource) bool { return r.Push == "http://127.0.0.1:8089/rollcall/peers" }},
		{"push ipv6 loopback", `push = "http://[::1]:8089/rollcall/peers"`, func(r *Resource) bool { return r.Push == "http://[::1]:8089/rollcall/peers" }},
		{"push localhost", `push = "http://localhost:8089/p"`, func(r *Resource) bool { return r.Push == "http://localhost:8089/p" }},
		{"push haproxy", `push = "haproxy:///run/haproxy/admin.sock?config=/etc/haproxy/rollcall/rollcall.cfg&template=haproxy-slots.tmpl"`, func(r *Resource) bool { return strings.HasPrefix(r.Push, "haproxy:///run/haproxy/admin.sock?") }},
		{"no push", ``, func(r *Resource) bool { return r.Push == "" }},
		{"guard_share", `guard_share = 0.8`, func(r *Resource) bool { return r.Guard != nil && *r.Guard == 0.8 }},
		{"no guard_share", ``, func(r *Resource) bool { return r.Guard == nil }},
		{"field names are case-insensitive, as confd", `KEYS = ["/x"]` + "\n" + `Mode = "0600"`, func(r *Resource) bool {
			return r.Mode == 0o600 && len(r.Keys) == 1
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := newResource(t, tc.fields, "x", "")
			if err != nil {
				t.Fatalf("Load(%s) = %v", tc.fields, err)
			}
			if !tc.check(r) {
				t.Errorf("Load(%s) = %+v", tc.fields, r)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, toml, tmpl, want string
	}{
		{"no template table", "src = \"t.tmpl\"\n", "x", "no [template] table"},
		{"empty file", "", "x", "no [template] table"},
		{"missing src", "[template]\ndest = \"/d\"\n", "x", "src: required"},
		{"missing dest", "[template]\nsrc = \"t.tmpl\"\n", "x", "dest: required"},
		{"bad toml", "[template\n", "x", "toml: line"},
		{"wrong type", "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\nkeys = \"/x\"\n", "x", "keys"},
		{"mode as number", "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\nmode = 644\n", "x", "mode"},
		{"mode not a number", "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\nmode = \"rw-r--r--\"\n", "x", `mode "rw-r--r--": not a number`},
		{"mode over 32 bits", "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\nmode = \"4294967296\"\n", "x", "not a number"},
		{"mode negative", "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\nmode = \"-420\"\n", "x", "not a number"},
		{"mode zero", "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\nmode = \"0000\"\n", "x", "no permission bits"},
		{"mode decimal 512 is 01000", "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\nmode = \"512\"\n", "x", "no permission bits"},
		{"mode bad octal", "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\nmode = \"0999\"\n", "x", "not a number"},
		{"unknown owner", "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\nowner = \"no-such-user-rollcall\"\n", "x", `owner "no-such-user-rollcall"`},
		{"unknown group", "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\ngroup = \"no-such-group-rollcall\"\n", "x", `group "no-such-group-rollcall"`},
		{"negative uid", "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\nuid = -2\n", "x", "uid -2: negative"},
		{"bad wait", "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\nwait = \"soon\"\n", "x", `wait: parse wait "soon"`},
		{"push to another host", "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\npush = \"http://10.0.0.1:8089/p\"\n", "x", "push: \"http://10.0.0.1:8089/p\": not a loopback address"},
		{"push by name", "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\npush = \"http://gateway:8089/p\"\n", "x", "not a loopback address"},
		{"push https", "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\npush = \"https://127.0.0.1:8089/p\"\n", "x", "want http://127.0.0.1:<port>/<path>"},
		{"push haproxy remote", "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\npush = \"haproxy://10.0.0.1:9999?config=/c.cfg&template=t\"\n", "x", "want a loopback ip:port"},
		{"push haproxy no config", "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\npush = \"haproxy:///run/a.sock?template=t\"\n", "x", "want ?config=<absolute path>"},
		{"push haproxy template path", "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\npush = \"haproxy:///run/a.sock?config=/c.cfg&template=../x\"\n", "x", "want ?config="},
		{"push with user", "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\npush = \"http://u:p@127.0.0.1:8089/p\"\n", "x", "want http://"},
		{"bad guard_share", "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\nguard_share = -1.0\n", "x", `guard_share -1`},
		{"bad check_cmd", "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\ncheck_cmd = \"nginx -t -c {{.src\"\n", "x", "check_cmd:"},
		{"bad reload_cmd", "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\nreload_cmd = \"{{end}}\"\n", "x", "reload_cmd:"},
		{"missing template", "[template]\nsrc = \"nope.tmpl\"\ndest = \"/d\"\n", "x", "read template: open"},
		{"template parse error names file and line", "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\n", "a\nb\n{{range}}\n", "t.tmpl:3:"},
		{"unknown function", "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\n", "\n{{nosuchfunc}}", `t.tmpl:2: function "nosuchfunc" not defined`},
		{"unclosed action", "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\n", "ok\n{{if true}}\n", "t.tmpl:3: unexpected EOF"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			os.Mkdir(filepath.Join(dir, "templates"), 0o755)
			path := filepath.Join(dir, "r.toml")
			writeFile(t, path, tc.toml)
			writeFile(t, filepath.Join(dir, "templates", "t.tmpl"), tc.tmpl)
			r, err := Load(dir, path, "")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load(%q) = %+v, %v; want error containing %q", tc.toml, r, err, tc.want)
			}
			var le *LoadError
			if !errors.As(err, &le) || le.Path != path || !strings.HasPrefix(err.Error(), "load "+path+": ") {
				t.Errorf("Load error %q is not a *LoadError naming %s", err, path)
			}
		})
	}
}

// TestParseMode: the mode a file gets is the one confd gives it
// (strconv.ParseUint base 0, then os.Chmod keeps the permission bits), with
// a warning where that is likely not what was meant.
func TestParseMode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want os.FileMode
		warn string // substring; "" = no warning
	}{
		{"", 0, ""},
		{"0644", 0o644, ""},
		{"0o600", 0o600, ""},
		{"0O600", 0o600, ""},
		{"0x1a4", 0o644, ""},
		{"0600", 0o600, ""},
		{"644", 0o204, `decimal 644 is 01204; only its permission bits are kept, so the file gets mode 0204, as with confd (write "0644" for octal 644)`},
		{"755", 0o363, `decimal 755 is 01363; only its permission bits are kept, so the file gets mode 0363`},
		{"600", 0o130, `decimal 600 is 01130; only its permission bits are kept, so the file gets mode 0130, as with confd (write "0600" for octal 600)`},
		{"420", 0o644, `decimal 420 is 0644, so the file gets mode 0644, as with confd (write "0420" for octal 420)`},
		{"493", 0o755, `decimal 493 is 0755, so the file gets mode 0755, as with confd`},
		{"04755", 0o755, "only its permission bits are kept, so the file gets mode 0755"},
		{"017777", 0o777, "only its permission bits are kept"},
		{"1_0", 0o12, "decimal 10 is 012"},
	}
	for _, tc := range tests {
		got, warn, err := parseMode(tc.in)
		if err != nil || got != tc.want || (tc.warn == "") != (warn == "") || !strings.Contains(warn, tc.warn) {
			t.Errorf("parseMode(%q) = %#o, %q, %v; want %#o and a warning with %q", tc.in, got, warn, err, tc.want, tc.warn)
		}
		if tc.warn != "" && !strings.HasPrefix(warn, "mode "+strconv.Quote(tc.in)+": ") {
			t.Errorf("parseMode(%q) warning %q does not start with the mode", tc.in, warn)
		}
	}
}

// TestLoadWarnings: what confd silently ignores loads, with a warning
// naming the field.
func TestLoadWarnings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, fields string
		want         []string
	}{
		{"clean", `mode = "0644"`, nil},
		{"unknown field", `destination = "/x"`, []string{`unknown field "template.destination" ignored`}},
		{"unknown field and decimal mode", "mode = \"644\"\ncolour = 1", []string{`unknown field "template.colour"`, `mode "644": decimal 644`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := newResource(t, tc.fields, "x", "")
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Warnings) != len(tc.want) {
				t.Fatalf("Warnings = %q; want %d", r.Warnings, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.Contains(r.Warnings[i], w) {
					t.Errorf("Warnings[%d] = %q; want it to contain %q", i, r.Warnings[i], w)
				}
			}
		})
	}
	// A table confd does not know, after [template].
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "templates"), 0o755)
	writeFile(t, filepath.Join(dir, "templates", "t.tmpl"), "x")
	p := filepath.Join(dir, "r.toml")
	writeFile(t, p, "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\n[extra]\na = 1\n")
	r, err := Load(dir, p, "")
	if err != nil || len(r.Warnings) != 2 || !strings.Contains(r.Warnings[0], `"extra"`) || !strings.Contains(r.Warnings[1], `"extra.a"`) {
		t.Errorf("Load(unknown table) = %v, %v; want it loaded with warnings naming extra and extra.a", r, err)
	}
}

func TestLoadOwnerUIDDisagree(t *testing.T) {
	t.Parallel()
	root, err := user.LookupId("0")
	if err != nil {
		t.Skipf("no uid 0: %v", err)
	}
	_, err = newResource(t, `owner = "`+root.Username+`"`+"\nuid = 1", "x", "")
	if err == nil || !strings.Contains(err.Error(), "is id 0 but uid is 1") {
		t.Errorf("Load(owner root, uid 1) = %v; want disagreement error", err)
	}
}

func TestParseWait(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want Wait
		ok   bool
	}{
		{"2s:10s", Wait{2 * time.Second, 10 * time.Second}, true},
		{"500ms", Wait{500 * time.Millisecond, 2 * time.Second}, true},
		{" 1s : 3s ", Wait{time.Second, 3 * time.Second}, true},
		{"0s", Wait{}, true},
		{"1s:1s", Wait{time.Second, time.Second}, true},
		{"", Wait{}, false},
		{"1s:", Wait{}, false},
		{":1s", Wait{}, false},
		{"5", Wait{}, false},
		{"2s:1s", Wait{}, false},
		{"-1s", Wait{}, false},
		{"1s:2s:3s", Wait{}, false},
	}
	for _, tc := range tests {
		got, err := ParseWait(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseWait(%q) = %v, %v; want %v, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		if err == nil {
			if back, err := ParseWait(got.String()); err != nil || back != got {
				t.Errorf("ParseWait(%q.String()=%q) = %v, %v", tc.in, got.String(), back, err)
			}
		}
	}
}

func TestWatchPrefixesTouches(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, fields, global string
		want                 []string
		touches, not         []string
	}{
		{"root", `keys = ["/"]`, "", []string{"/"}, []string{"/a", "/a/b", "/_ports/x"}, nil},
		{"empty key", `keys = [""]`, "", []string{"/"}, []string{"/a"}, nil},
		{"no keys", ``, "", []string{}, nil, []string{"/a", "/"}},
		{"app dir", `keys = ["/app_prod"]`, "", []string{"/app_prod"},
			[]string{"/app_prod", "/app_prod/10.0.0.1-80"}, []string{"/app_production", "/app_production/x", "/app", "/"}},
		{"trailing slash cleaned", `keys = ["/app_prod/"]`, "", []string{"/app_prod"},
			[]string{"/app_prod/x"}, []string{"/app_production/x"}},
		{"prefix plus root", `prefix = "/app_prod"` + "\nkeys = [\"/\"]", "", []string{"/app_prod"},
			[]string{"/app_prod/x"}, []string{"/app_production/x"}},
		{"sorted deduplicated nested dropped", `keys = ["/b", "/a", "/b", "/a/x", "/ab"]`, "", []string{"/a", "/ab", "/b"},
			[]string{"/a/x/y", "/ab", "/b/z"}, []string{"/abc", "/c"}},
		{"root covers everything", `keys = ["/x", "/"]`, "", []string{"/"}, []string{"/q"}, nil},
		{"global prefix", `prefix = "/ignored"` + "\nkeys = [\"/a\"]", "/g", []string{"/g/a"},
			[]string{"/g/a/1"}, []string{"/ignored/a/1", "/a/1", "/g/ab"}},
		{"relative key", `prefix = "/p"` + "\nkeys = [\"x\"]", "", []string{"/p/x"}, []string{"/p/x/1"}, []string{"/x"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := newResource(t, tc.fields, "x", tc.global)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.WatchPrefixes(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("WatchPrefixes() = %q; want %q", got, tc.want)
			}
			for _, k := range tc.touches {
				if !r.Touches(k) {
					t.Errorf("Touches(%q) = false; want true", k)
				}
			}
			for _, k := range tc.not {
				if r.Touches(k) {
					t.Errorf("Touches(%q) = true; want false", k)
				}
			}
		})
	}
}

func TestWatchPrefixesIsACopy(t *testing.T) {
	t.Parallel()
	r, err := newResource(t, `keys = ["/a"]`, "x", "")
	if err != nil {
		t.Fatal(err)
	}
	r.WatchPrefixes()[0] = "/"
	if r.Touches("/b") {
		t.Error("changing WatchPrefixes()' result changed the resource")
	}
}

func TestLoadDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, d := range []string{"conf.d", "templates", "conf.d/sub.toml", "conf.d/nginx", "conf.d/nginx/apps", "conf.d/.git"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(dir, "templates", "ok.tmpl"), "ok")
	writeFile(t, filepath.Join(dir, "templates", "bad.tmpl"), "{{if}}")
	res := func(src, dest string) string {
		return "[template]\nsrc = " + strconv.Quote(src) + "\ndest = " + strconv.Quote(dest) + "\nkeys = [\"/\"]\n"
	}
	writeFile(t, filepath.Join(dir, "conf.d", "a.toml"), res("ok.tmpl", "/tmp/a"))
	writeFile(t, filepath.Join(dir, "conf.d", "b.toml"), res("bad.tmpl", "/tmp/b"))
	writeFile(t, filepath.Join(dir, "conf.d", "c.toml"), res("ok.tmpl", "/tmp/c")+"bogus = 1\n")
	writeFile(t, filepath.Join(dir, "conf.d", "d.toml"), res("ok.tmpl", "/tmp/d"))
	writeFile(t, filepath.Join(dir, "conf.d", "e.toml"), res("ok.tmpl", "/tmp/../tmp/a"))
	writeFile(t, filepath.Join(dir, "conf.d", "f.toml.example"), res("bad.tmpl", "/tmp/f"))
	writeFile(t, filepath.Join(dir, "conf.d", "README"), "not a resource")
	writeFile(t, filepath.Join(dir, "conf.d", ".#a.toml"), "editor lock")
	// confd walks conf.d recursively: subdirectories load, in path order.
	writeFile(t, filepath.Join(dir, "conf.d", "nginx", "g.toml"), res("ok.tmpl", "/tmp/g"))
	writeFile(t, filepath.Join(dir, "conf.d", "nginx", "apps", "h.toml"), res("ok.tmpl", "/tmp/h"))
	writeFile(t, filepath.Join(dir, "conf.d", "nginx", "apps", "i.toml"), res("ok.tmpl", "/tmp/d"))
	writeFile(t, filepath.Join(dir, "conf.d", ".git", "j.toml"), res("ok.tmpl", "/tmp/j"))

	rs, errs := LoadDir(dir, "/g")
	var got []string
	for _, r := range rs {
		rel, _ := filepath.Rel(filepath.Join(dir, "conf.d"), r.Path)
		got = append(got, rel+" "+r.Prefix)
	}
	want := []string{"a.toml /g", "c.toml /g", "d.toml /g", "nginx/apps/h.toml /g", "nginx/g.toml /g"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LoadDir resources = %q; want %q", got, want)
	}
	if w := rs[1].Warnings; len(w) != 1 || !strings.Contains(w[0], `unknown field "template.bogus" ignored`) {
		t.Errorf("c.toml warnings = %q; want the unknown field", w)
	}
	wantErrs := []string{"b.toml: template: ", "e.toml: dest /tmp/../tmp/a is already written by", "i.toml: dest /tmp/d is already written by"}
	if len(errs) != len(wantErrs) {
		t.Fatalf("LoadDir errors = %v; want %d", errs, len(wantErrs))
	}
	for i, e := range errs {
		if !strings.Contains(e.Error(), wantErrs[i]) {
			t.Errorf("LoadDir error %d = %q; want it to contain %q", i, e, wantErrs[i])
		}
	}
	if !strings.Contains(errs[0].Error(), "bad.tmpl:1:") {
		t.Errorf("template error %q does not name bad.tmpl:1", errs[0])
	}
}

// TestLoadDirUnreadableSubdir: a subdirectory that cannot be read is an
// error naming it; the rest loads.
func TestLoadDirUnreadableSubdir(t *testing.T) {
	t.Parallel()
	if os.Geteuid() == 0 {
		t.Skip("root reads any directory")
	}
	dir := t.TempDir()
	for _, d := range []string{"conf.d", "templates", "conf.d/locked"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(dir, "templates", "ok.tmpl"), "ok")
	writeFile(t, filepath.Join(dir, "conf.d", "a.toml"), "[template]\nsrc = \"ok.tmpl\"\ndest = \"/tmp/a\"\n")
	locked := filepath.Join(dir, "conf.d", "locked")
	if err := os.Chmod(locked, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(locked, 0o755) })
	rs, errs := LoadDir(dir, "")
	if len(rs) != 1 || len(errs) != 1 || errs[0].Path != locked || !errors.Is(errs[0], os.ErrPermission) {
		t.Errorf("LoadDir = %d resources, %v; want a.toml and one permission error for %s", len(rs), errs, locked)
	}
}

// TestLoaderSyncOnly: confd's -sync-only loads resources without their
// commands.
func TestLoaderSyncOnly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "templates"), 0o755)
	writeFile(t, filepath.Join(dir, "templates", "t.tmpl"), "x")
	p := filepath.Join(dir, "r.toml")
	writeFile(t, p, "[template]\nsrc = \"t.tmpl\"\ndest = \"/d\"\ncheck_cmd = \"false\"\nreload_cmd = \"false\"\n")
	r, err := Loader{SyncOnly: true}.Load(dir, p)
	if err != nil || r.CheckCmd != "" || r.ReloadCmd != "" {
		t.Errorf("Loader{SyncOnly}.Load = %+v, %v; want no commands", r, err)
	}
	r, err = Loader{}.Load(dir, p)
	if err != nil || r.CheckCmd != "false" || r.ReloadCmd != "false" {
		t.Errorf("Loader{}.Load = %+v, %v; want the commands", r, err)
	}
}

func TestLoadDirMissing(t *testing.T) {
	t.Parallel()
	rs, errs := LoadDir(t.TempDir(), "")
	if len(rs) != 0 || len(errs) != 1 || !errors.Is(errs[0], os.ErrNotExist) {
		t.Errorf("LoadDir(no conf.d) = %v, %v; want one not-exist error", rs, errs)
	}
}

// TestStoreKey: the fast path gives exactly confd's
// path.Join("/", strings.TrimPrefix(key, prefix)).
func TestStoreKey(t *testing.T) {
	t.Parallel()
	prefixes := []string{"/", "/app", "/app/", "/a/b", "//app", "/app/."}
	keys := []string{"/app", "/app/", "/app/x", "/app/x/", "/app//x", "/app/./x", "/app/../x", "/appx/y",
		"/", "/x", "/a/b/c", "//app/x", "/app/.", "/app/..", "/app/x/.", "x", "", "/app/.x", "/app/x..y"}
	for _, p := range prefixes {
		for _, k := range keys {
			want := path.Join("/", strings.TrimPrefix(k, p))
			if got := storeKey(p, k); got != want {
				t.Errorf("storeKey(%q, %q) = %q; want %q", p, k, got, want)
			}
		}
	}
}
