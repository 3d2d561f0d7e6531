package registry

import (
	"regexp"
	"strings"
	"testing"
)

// maxErr bounds an error about a refused input, whatever its length (a
// quoted input is cut to maxQuoted bytes, which escaping may quadruple).
const maxErr = 2048

// FuzzParseAddr: whatever the input, ParseAddr either refuses it or returns
// an address whose canonical form is exactly the input — so an accepted
// value carries no byte nginx could read as syntax — and whose instance
// name parses back to it.
func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{
		"172.18.100.31:86", "[::1]:80", "[2001:db8::1]:8080", "1.2.3.4:80; } server {", "1.2.3.4:80\n",
		"[fe80::1%eth0]:80", "[::ffff:1.2.3.4]:80", "1.2.3.4:0", "1.2.3.4:65536", "01.2.3.4:80", "", ":80",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddr(s)
		if err != nil {
			if len(err.Error()) > maxErr {
				t.Errorf("ParseAddr(%d bytes): error of %d bytes", len(s), len(err.Error()))
			}
			return
		}
		if a.String() != s || Value(a) != s {
			t.Fatalf("ParseAddr(%q) = %v: not the input", s, a)
		}
		if strings.ContainsAny(s, " ;{}\n\t\"'%") || a.Port() == 0 || a.Addr().Zone() != "" {
			t.Fatalf("ParseAddr(%q) accepted %v", s, a)
		}
		back, err := ParseInstanceName(InstanceName(a))
		if err != nil || back != a {
			t.Fatalf("ParseInstanceName(InstanceName(%v)) = %v, %v", a, back, err)
		}
	})
}

// FuzzInstanceKey: the key grammar. An instance key's service dir parses
// into valid app and env names and the key ends in exactly what Key would
// write for them; an accepted key=value pair is the canonical one; nothing
// panics, and every error stays short.
func FuzzInstanceKey(f *testing.F) {
	for _, kv := range [][2]string{
		{"/search_PRE/172.18.100.31-86", "172.18.100.31:86"},
		{"/p/q/search_PRE/::1-80", "[::1]:80"},
		{"/odd;}server{listen 82;}_env/1.2.3.4-80", "1.2.3.4:80"},
		{"/a_b_c/10.0.0.1-80", "10.0.0.1:80"},
		{"/search_PRE/10.0.0.1-080", "10.0.0.1:80"},
		{"/_ports/10.0.0.1/80", "a_b"},
		{"/_renderers/gw1", `{"revision":1}`},
		{"search_PRE/10.0.0.1-80", "10.0.0.1:80"},
		{"/x_y/1.2.3.4-80", "1.2.3.4:80 backup"},
	} {
		f.Add(kv[0], kv[1])
	}
	f.Fuzz(func(t *testing.T, key, value string) {
		Covers(key, value)
		Reserved(key, value)
		AckDirs(key)
		if IsInstanceKey(key) {
			i := strings.LastIndexByte(key, '/')
			j := strings.LastIndexByte(key[:i], '/')
			app, env, err := ParseService(key[j+1 : i])
			if err != nil || ValidName(app) != nil || ValidName(env) != nil {
				t.Fatalf("IsInstanceKey(%q) but service %q: %v", key, key[j+1:i], err)
			}
			a, err := ParseInstanceName(key[i+1:])
			if err != nil || !strings.HasSuffix(key, "/"+Service(app, env)+"/"+InstanceName(a)) {
				t.Fatalf("IsInstanceKey(%q): instance %v, %v", key, a, err)
			}
		}
		a, err := ParseInstance(key, value)
		if err != nil {
			if len(err.Error()) > maxErr {
				t.Errorf("ParseInstance: error of %d bytes", len(err.Error()))
			}
			return
		}
		if Value(a) != value || key[strings.LastIndexByte(key, '/')+1:] != InstanceName(a) { // the last segment, or all of a key without "/"
			t.Fatalf("ParseInstance(%q, %q) = %v", key, value, a)
		}
	})
}

// nameSpec is ValidName's grammar as a regexp: the loop must agree with it.
var nameSpec = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]*$`)

// FuzzValidName: ValidName (a loop) accepts exactly what nameSpec matches,
// and Reserved (no allocation) agrees with its definition by CleanPrefix.
func FuzzValidName(f *testing.F) {
	for _, s := range []string{"search", "a.b-c", "", "-a", ".a", "a_b", "a\n", "ä", "0x", "a..", "/_ports/x"} {
		f.Add(s, "/")
	}
	f.Add("/_renderers/gw", "services/")
	f.Fuzz(func(t *testing.T, s, prefix string) {
		if got, want := ValidName(s) == nil, nameSpec.MatchString(s); got != want {
			t.Fatalf("ValidName(%q) ok = %v; the grammar says %v", s, got, want)
		}
		rest, ok := strings.CutPrefix(s, CleanPrefix(prefix)+"/")
		top, _, _ := strings.Cut(rest, "/")
		if want := ok && (top == "_ports" || top == "_renderers"); Reserved(prefix, s) != want {
			t.Fatalf("Reserved(%q, %q) = %v; want %v", prefix, s, !want, want)
		}
	})
}
