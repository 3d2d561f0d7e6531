package registry

import (
	"net/netip"
	"testing"
)

func TestParseAddr(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" = error
	}{
		{"172.18.100.31:86", "172.18.100.31:86"},
		{"[::1]:80", "[::1]:80"},
		{"[2001:db8::1]:8080", "[2001:db8::1]:8080"},
		{"1.2.3.4:80; } server {", ""},
		{"1.2.3.4:80 ", ""},
		{" 1.2.3.4:80", ""},
		{"1.2.3.4", ""},
		{"1.2.3.4:0", ""},
		{"1.2.3.4:65536", ""},
		{"1.2.3.4:080", ""},
		{"01.2.3.4:80", ""},
		{"[fe80::1%eth0]:80", ""},
		{"[::ffff:1.2.3.4]:80", ""},
		{"[2001:DB8::1]:80", ""},
		{"[2001:db8:0::1]:80", ""},
		{"localhost:80", ""},
		{"1.2.3.4:80\n", ""},
		{"", ""},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseAddr(tc.in)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("ParseAddr(%q) = %v; want error", tc.in, got)
				}
				return
			}
			if err != nil || got.String() != tc.want {
				t.Fatalf("ParseAddr(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestParseInstance(t *testing.T) {
	tests := []struct {
		key, value string
		ok         bool
	}{
		{"/search_PRE/172.18.100.31-86", "172.18.100.31:86", true},
		{"/p/search_PRE/::1-80", "[::1]:80", true},
		{"/search_PRE/172.18.100.31-86", "172.18.100.31:87", false},
		{"/search_PRE/172.18.100.31-86", "172.18.100.32:86", false},
		{"/search_PRE/x", "172.18.100.31:86", false},
		{"/search_PRE/172.18.100.31-086", "172.18.100.31:86", false},
		{"/search_PRE/172.18.100.31-86", "1.2.3.4:80; } server {", false},
	}
	for _, tc := range tests {
		_, err := ParseInstance(tc.key, tc.value)
		if (err == nil) != tc.ok {
			t.Errorf("ParseInstance(%q, %q) err = %v; want ok=%v", tc.key, tc.value, err, tc.ok)
		}
	}
}

func TestKeys(t *testing.T) {
	a := netip.MustParseAddrPort("172.18.100.31:86")
	if got, want := Key("", "search", "PRE", a), "/search_PRE/172.18.100.31-86"; got != want {
		t.Errorf("Key = %q; want %q", got, want)
	}
	if got, want := Key("/x/", "search", "PRE", a), "/x/search_PRE/172.18.100.31-86"; got != want {
		t.Errorf("Key = %q; want %q", got, want)
	}
	if got, want := Value(a), "172.18.100.31:86"; got != want {
		t.Errorf("Value = %q; want %q", got, want)
	}
	if got, want := PortClaimKey("", a.Addr(), 86), "/_ports/172.18.100.31/86"; got != want {
		t.Errorf("PortClaimKey = %q; want %q", got, want)
	}
	if got, want := RendererKey("/x", "gw1"), "/x/_renderers/gw1"; got != want {
		t.Errorf("RendererKey = %q; want %q", got, want)
	}
	if got := Key("", "s", "E", netip.MustParseAddrPort("[::1]:80")); got != "/s_E/::1-80" {
		t.Errorf("Key v6 = %q", got)
	}
}

func TestValidName(t *testing.T) {
	for _, s := range []string{"search", "PRE", "a.b-c", "0x"} {
		if err := ValidName(s); err != nil {
			t.Errorf("ValidName(%q) = %v; want nil", s, err)
		}
	}
	for _, s := range []string{"", "-a", ".a", "a_b", "a/b", "a b", "ä"} {
		if err := ValidName(s); err == nil {
			t.Errorf("ValidName(%q) = nil; want error", s)
		}
	}
}

func TestCovers(t *testing.T) {
	tests := []struct {
		prefix, key string
		want        bool
	}{
		{"/app_prod", "/app_prod", true},
		{"/app_prod", "/app_prod/1.2.3.4-80", true},
		{"/app_prod", "/app_production/1.2.3.4-80", false},
		{"/app_prod/", "/app_prod/1.2.3.4-80", true},
		{"", "/anything", true},
		{"/", "/anything", true},
	}
	for _, tc := range tests {
		if got := Covers(tc.prefix, tc.key); got != tc.want {
			t.Errorf("Covers(%q, %q) = %v; want %v", tc.prefix, tc.key, got, tc.want)
		}
	}
	if !(Ack{Prefixes: []string{"/x", "/search_PRE"}}).CoversKey("/search_PRE/1.2.3.4-5") {
		t.Error("Ack.CoversKey: want true")
	}
}

func BenchmarkParseAddr(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseAddr("172.18.100.31:86"); err != nil {
			b.Fatal(err)
		}
	}
}

func TestAckRevisionFor(t *testing.T) {
	a := Ack{Revision: 10, Prefixes: []string{"/"}, Applied: map[string]int64{"/": 12, "/a_prod": 10, "/b_prod": 20}}
	tests := []struct {
		ack  Ack
		key  string
		want int64
	}{
		{a, "/b_prod/10.0.0.1-80", 12}, // "/" and "/b_prod" cover it: the lesser
		{a, "/a_prod/10.0.0.1-80", 10},
		{a, "/c_prod/10.0.0.1-80", 12},
		{Ack{Revision: 10, Applied: map[string]int64{"/b_prod": 20}}, "/b_prod/x", 20},
		{Ack{Revision: 10, Applied: map[string]int64{"/b_prod": 20}}, "/c_prod/x", 10}, // none covers it
		{Ack{Revision: 10}, "/b_prod/x", 10},                                           // an older renderer
		{Ack{Revision: 10, Applied: map[string]int64{"/b_prod": 5}}, "/b_prod/x", 10},  // never below Revision
	}
	for _, tc := range tests {
		if got := tc.ack.RevisionFor(tc.key); got != tc.want {
			t.Errorf("%+v.RevisionFor(%q) = %d; want %d", tc.ack, tc.key, got, tc.want)
		}
	}
}
