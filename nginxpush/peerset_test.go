package nginxpush

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
)

// decodeCases are shared with the nginx test, which sends each body to the
// Lua module: both parsers must accept and refuse the same texts.
var decodeCases = []struct {
	name, body string
	ok         bool
}{
	{"empty state", "version 1\n", true},
	{"one app", "version 7\nsearch_PRE 172.18.100.31:86\n", true},
	{"no instances", "version 7\nsearch_PRE\n", true},
	{"several", "version 12\na_b 10.0.0.1:80 10.0.0.2:80\nc_d [::1]:8080 [1:0:0:1::]:65535 [2001:db8::1]:1\n", true},
	{"ipv6 longest zero run", "version 3\na_b [1:0:0:1::1]:80\n", true},
	{"big version", "version 9007199254740991\n", true},
	{"version zero", "version 0\n", true},
	{"empty", "", false},
	{"no newline at end", "version 1", false},
	{"no version", "a_b 10.0.0.1:80\n", false},
	{"version leading zero", "version 01\n", false},
	{"version sign", "version -1\n", false},
	{"version too big", "version 9007199254740992\n", false},
	{"version word", "version x\n", false},
	{"version two spaces", "version  1\n", false},
	{"blank line", "version 1\n\n", false},
	{"crlf", "version 1\r\na_b 10.0.0.1:80\r\n", false},
	{"bad name", "version 1\nab 10.0.0.1:80\n", false},
	{"name with two underscores", "version 1\na_b_c 10.0.0.1:80\n", false},
	{"name with brace", "version 1\na_b{ 10.0.0.1:80\n", false},
	{"duplicate app", "version 1\na_b 10.0.0.1:80\na_b 10.0.0.2:80\n", false},
	{"duplicate addr", "version 1\na_b 10.0.0.1:80 10.0.0.1:80\n", false},
	{"double space", "version 1\na_b  10.0.0.1:80\n", false},
	{"trailing space", "version 1\na_b 10.0.0.1:80 \n", false},
	{"leading space", "version 1\n a_b 10.0.0.1:80\n", false},
	{"tab", "version 1\na_b\t10.0.0.1:80\n", false},
	{"port 0", "version 1\na_b 10.0.0.1:0\n", false},
	{"port too big", "version 1\na_b 10.0.0.1:65536\n", false},
	{"port leading zero", "version 1\na_b 10.0.0.1:080\n", false},
	{"octet leading zero", "version 1\na_b 010.0.0.1:80\n", false},
	{"octet too big", "version 1\na_b 10.0.0.256:80\n", false},
	{"no port", "version 1\na_b 10.0.0.1\n", false},
	{"hostname", "version 1\na_b localhost:80\n", false},
	{"injection", "version 1\na_b 1.2.3.4:80;}server{\n", false},
	{"ipv6 no brackets", "version 1\na_b ::1:80\n", false},
	{"ipv6 upper case", "version 1\na_b [2001:DB8::1]:80\n", false},
	{"ipv6 not compressed", "version 1\na_b [2001:db8:0:0:0:0:0:1]:80\n", false},
	{"ipv6 leading zero", "version 1\na_b [2001:0db8::1]:80\n", false},
	{"ipv6 single zero compressed", "version 1\na_b [1:2:3:4:5:6::8]:80\n", false},
	{"ipv6 shorter run compressed", "version 1\na_b [1::1:0:0:0:1]:80\n", false},
	{"ipv6 zone", "version 1\na_b [fe80::1%eth0]:80\n", false},
	{"ipv4-mapped", "version 1\na_b [::ffff:1.2.3.4]:80\n", false},
	{"ipv4-mapped hex", "version 1\na_b [::ffff:102:304]:80\n", false},
	{"ipv6 embedded ipv4", "version 1\na_b [::1.2.3.4]:80\n", false},
	{"ipv6 two compressions", "version 1\na_b [1::2::3]:80\n", false},
}

func TestDecode(t *testing.T) {
	for _, tc := range decodeCases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Decode([]byte(tc.body))
			if (err == nil) != tc.ok {
				t.Fatalf("Decode(%q) = %v; want ok=%v", tc.body, err, tc.ok)
			}
			if err == nil && !bytes.Equal(p.Encode(), []byte(tc.body)) {
				// Every accepted text in the table is already canonical.
				t.Errorf("Decode(%q).Encode() = %q; want the input back", tc.body, p.Encode())
			}
		})
	}
}

func TestEncode(t *testing.T) {
	p := PeerSet{Version: 42, Services: map[string][]netip.AddrPort{
		"web_prod":   {netip.MustParseAddrPort("[::1]:80"), netip.MustParseAddrPort("10.0.0.10:80"), netip.MustParseAddrPort("10.0.0.9:80")},
		"search_PRE": nil,
	}}
	want := "version 42\nsearch_PRE\nweb_prod 10.0.0.9:80 10.0.0.10:80 [::1]:80\n"
	if got := string(p.Encode()); got != want {
		t.Fatalf("Encode() = %q; want %q", got, want)
	}
	q, err := Decode([]byte(want))
	if err != nil || q.Version != 42 || !q.Equal(p) {
		t.Fatalf("Decode(Encode()) = %+v, %v; want %+v", q, err, p)
	}
}

func TestValidate(t *testing.T) {
	a := netip.MustParseAddrPort("10.0.0.1:80")
	for _, tc := range []struct {
		name string
		p    PeerSet
		want string // "" = valid
	}{
		{"ok", PeerSet{Version: 1, Services: map[string][]netip.AddrPort{"a_b": {a}}}, ""},
		{"negative version", PeerSet{Version: -1}, "out of range"},
		{"huge version", PeerSet{Version: 1 << 53}, "out of range"},
		{"bad name", PeerSet{Version: 1, Services: map[string][]netip.AddrPort{"a b_c": {a}}}, "parse service"},
		{"port 0", PeerSet{Version: 1, Services: map[string][]netip.AddrPort{"a_b": {netip.MustParseAddrPort("10.0.0.1:0")}}}, "port 0"},
		{"zone", PeerSet{Version: 1, Services: map[string][]netip.AddrPort{"a_b": {netip.MustParseAddrPort("[fe80::1%eth0]:80")}}}, "zone"},
		{"duplicate", PeerSet{Version: 1, Services: map[string][]netip.AddrPort{"a_b": {a, a}}}, "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v; want %q", err, tc.want)
			}
		})
	}
}

// FuzzDecode: whatever nginx answers, Decode either refuses it or returns a
// set that is valid, encodes canonically and decodes back to itself.
// `go test -fuzz FuzzDecode ./nginxpush` explores further; plain `go test`
// runs the seeds (testdata/fuzz/FuzzDecode and decodeCases).
func FuzzDecode(f *testing.F) {
	for _, tc := range decodeCases {
		f.Add([]byte(tc.body))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Decode(b)
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("Decode(%q) accepted an invalid set: %v", b, err)
		}
		enc := p.Encode()
		q, err := Decode(enc)
		if err != nil || q.Version != p.Version || !q.Equal(p) {
			t.Fatalf("Decode(%q).Encode() = %q does not decode back: %v", b, enc, err)
		}
		if !bytes.Equal(q.Encode(), enc) {
			t.Fatalf("Encode not canonical for %q", b)
		}
	})
}

// deltaCases are shared with the nginx test, like decodeCases: both
// parsers must accept and refuse the same deltas.
var deltaCases = []struct {
	name, body string
	ok         bool
}{
	{"one app", "version 8 from 7\nsearch_PRE 172.18.100.31:86\n", true},
	{"app emptied", "version 8 from 7\nsearch_PRE\n", true},
	{"nothing changed", "version 8 from 7\n", true},
	{"from zero", "version 1 from 0\na_b 10.0.0.1:80\n", true},
	{"base equal", "version 7 from 7\n", false},
	{"base newer", "version 7 from 8\n", false},
	{"base leading zero", "version 8 from 07\n", false},
	{"base word", "version 8 from x\n", false},
	{"base missing", "version 8 from \n", false},
	{"base too big", "version 8 from 9007199254740992\n", false},
	{"two spaces", "version 8  from 7\n", false},
	{"bad address", "version 8 from 7\na_b 10.0.0.1:80;\n", false},
	{"duplicate app", "version 8 from 7\na_b\na_b 10.0.0.1:80\n", false},
}

func TestDecodeDelta(t *testing.T) {
	for _, tc := range deltaCases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := DecodeDelta([]byte(tc.body))
			if (err == nil) != tc.ok {
				t.Fatalf("DecodeDelta(%q) = %v; want ok=%v", tc.body, err, tc.ok)
			}
			if err == nil && !bytes.Equal(d.Encode(), []byte(tc.body)) {
				t.Errorf("DecodeDelta(%q).Encode() = %q; want the input back", tc.body, d.Encode())
			}
			if _, err := Decode([]byte(tc.body)); err == nil {
				t.Errorf("Decode(%q) accepted a delta as a full state", tc.body)
			}
		})
	}
	if _, err := DecodeDelta([]byte("version 3\na_b 10.0.0.1:80\n")); err == nil {
		t.Error("DecodeDelta accepted a full state")
	}
}

// TestDiff: a delta lists exactly the apps whose peers differ (order
// aside), an app that lost its peers with none, and applied to the old set
// gives the new one.
func TestDiff(t *testing.T) {
	a, b, c := netip.MustParseAddrPort("10.0.0.1:80"), netip.MustParseAddrPort("10.0.0.2:80"), netip.MustParseAddrPort("[::1]:80")
	old := PeerSet{Version: 4, Services: map[string][]netip.AddrPort{
		"same_prod": {a, b}, "reordered_prod": {a, b}, "changed_prod": {a}, "gone_prod": {c}, "empty_prod": nil,
	}}
	new := PeerSet{Version: 9, Services: map[string][]netip.AddrPort{
		"same_prod": {a, b}, "reordered_prod": {b, a}, "changed_prod": {a, c}, "new_prod": {b}, "emptied_prod": nil,
	}}
	d := Diff(old, new)
	want := "version 9 from 4\nchanged_prod 10.0.0.1:80 [::1]:80\ngone_prod\nnew_prod 10.0.0.2:80\n"
	if got := string(d.Encode()); got != want {
		t.Fatalf("Diff().Encode() = %q; want %q", got, want)
	}
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := old.Apply(d); got.Version != 9 || !got.Equal(new) {
		t.Fatalf("old.Apply(Diff(old, new)) = %+v; want %+v", got, new)
	}
	if err := (Delta{Base: 9, Version: 9}).Validate(); err == nil {
		t.Error("Validate accepted a delta whose base is not older")
	}
}

// FuzzDecodeDelta: as FuzzDecode, for deltas.
func FuzzDecodeDelta(f *testing.F) {
	for _, tc := range deltaCases {
		f.Add([]byte(tc.body))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeDelta(b)
		if err != nil {
			return
		}
		if err := d.Validate(); err != nil {
			t.Fatalf("DecodeDelta(%q) accepted an invalid delta: %v", b, err)
		}
		enc := d.Encode()
		e, err := DecodeDelta(enc)
		if err != nil || e.Version != d.Version || e.Base != d.Base || !bytes.Equal(e.Encode(), enc) {
			t.Fatalf("DecodeDelta(%q).Encode() = %q does not decode back: %v", b, enc, err)
		}
	})
}
