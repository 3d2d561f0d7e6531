package registry

import (
	"slices"
	"testing"
)

func TestReserved(t *testing.T) {
	tests := []struct {
		prefix, key string
		want        bool
	}{
		{"", "/_ports/10.0.0.1/80", true},
		{"", "/_renderers/gw1", true},
		{"", "/_renderers", true}, // the dir itself
		{"", "/_ports", true},
		{"/", "/_renderers/gw1", true},
		{"/services", "/services/_ports/10.0.0.1/80", true},
		{"/services/", "/services/_renderers/gw1", true},
		{"services", "/services/_renderers/gw1", true},
		{"", "/services/_ports/10.0.0.1/80", false}, // another prefix's claims: not this registry's
		{"/services", "/_renderers/gw1", false},
		{"", "/cfg/_ports/x", false},
		{"", "/cfg/_renderers/x", false},
		{"", "/_portsx/a", false},
		{"", "/_renderersx/a", false},
		{"", "/search_PRE/10.0.0.1-80", false},
		{"/services", "/servicesx/_ports/1", false},
	}
	for _, tc := range tests {
		if got := Reserved(tc.prefix, tc.key); got != tc.want {
			t.Errorf("Reserved(%q, %q) = %v; want %v", tc.prefix, tc.key, got, tc.want)
		}
	}
}

func TestIsInstanceKey(t *testing.T) {
	tests := []struct {
		key  string
		want bool
	}{
		{"/search_PRE/172.18.100.31-86", true},
		{"/p/q/search_PRE/172.18.100.31-86", true},
		{"/search_PRE/::1-80", true},
		{"search_PRE/10.0.0.1-80", false}, // no leading "/": the first segment is no service dir
		{"/search_PRE/x", false},
		{"/search_PRE/10.0.0.1-080", false},
		{"/search_PRE/10.0.0.1-0", false},
		{"/search/10.0.0.1-80", false},
		{"/_ports/10.0.0.1-80", false},
		{"/a_b_c/10.0.0.1-80", false},
		{"/10.0.0.1-80", false},
		{"/cfg/db_host", false},
		{"", false},
	}
	for _, tc := range tests {
		if got := IsInstanceKey(tc.key); got != tc.want {
			t.Errorf("IsInstanceKey(%q) = %v; want %v", tc.key, got, tc.want)
		}
	}
}

func TestCollapse(t *testing.T) {
	tests := []struct {
		in, want []string
	}{
		{nil, nil},
		{[]string{"/b", "/a"}, []string{"/a", "/b"}},
		{[]string{"/a", "/a/b", "/ab"}, []string{"/a", "/ab"}},
		{[]string{"/a/", "/a/b", "/a"}, []string{"/a"}},
		{[]string{"/x", "/"}, []string{"/"}},
		{[]string{"/x", ""}, []string{""}},
		{[]string{"/a", "/a"}, []string{"/a"}},
	}
	for _, tc := range tests {
		if got := Collapse(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("Collapse(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

func TestAckDirs(t *testing.T) {
	tests := []struct {
		key  string
		want []string
	}{
		{"/search_PRE/10.0.0.1-80", []string{"/_renderers/", "/search_PRE/_renderers/"}},
		{"/services/search_PRE/10.0.0.1-80", []string{"/_renderers/", "/services/_renderers/", "/services/search_PRE/_renderers/"}},
	}
	for _, tc := range tests {
		if got := AckDirs(tc.key); !slices.Equal(got, tc.want) {
			t.Errorf("AckDirs(%q) = %q; want %q", tc.key, got, tc.want)
		}
	}
}
