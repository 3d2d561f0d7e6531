package confd

import (
	"reflect"
	"strings"
	"testing"

	"github.com/kelseyhightower/memkv"
)

// globState is a render's state over lines of "key=value" (a key set twice
// keeps the last value, as in memkv), and memkv's store of the same.
func globState(lines string) (*state, *memkv.Store) {
	st := &state{}
	m := memkv.New()
	for line := range strings.Lines(lines) {
		k, v, _ := strings.Cut(strings.TrimSuffix(line, "\n"), "=")
		st.pairs = append(st.pairs, pair{rel: k, KV: &KV{Key: k, Value: v}})
		m.Set(k, v)
	}
	return st, &m
}

func TestGlobDir(t *testing.T) {
	t.Parallel()
	st, _ := globState("/a/x=1\n/a/y=0\n/a/y/z=9\n/a/=e\n/b/x=2\n/x=3\nnoslash=4\n/a/x=5\n/a//w=6\n")
	tests := []struct {
		pattern string
		want    []string
		fast    bool
	}{
		{"/a/*", []string{"0", "5", "e"}, true},
		{"/a/y/*", []string{"9"}, true},
		{"/*", []string{"3"}, true},
		{"/a//*", []string{"6"}, true},
		{"/c/*", []string{}, true},
		{"/*/x", []string{"2", "5"}, false},
		{"/a/?", []string{"0", "5"}, false},
		{"/[ab]/*", []string{"0", "2", "5", "e"}, false},
		{"/a/x", []string{"5"}, false},
	}
	for _, tc := range tests {
		if _, fast := literalDir(tc.pattern); fast != tc.fast {
			t.Errorf("literalDir(%q) = %v; want %v", tc.pattern, fast, tc.fast)
		}
		got, err := st.getvs(tc.pattern)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("getvs(%q) = %q, %v; want %q", tc.pattern, got, err, tc.want)
		}
	}
	if _, err := st.getvs("/["); err == nil {
		t.Error(`getvs("/[") succeeded; want memkv's syntax error`)
	}
}

// FuzzGlobDir: gets and getvs answer exactly as memkv v0.1.1 does, through
// the index or not.
func FuzzGlobDir(f *testing.F) {
	f.Add("/a/x=1\n/a/y=2\n/b/x=3\n", "/a/*")
	f.Add("/a/x=1\n/a/=2\n/a/x/y=3\n/x=4\nx=5\n", "/*")
	f.Add("/a//x=1\n/a/x=2\n", "/a//*")
	f.Add("/a/x=1\n/a/x=2\n", "/a/*")
	f.Add("/a/x=1\n", `/\a/*`)
	f.Fuzz(func(t *testing.T, lines, pattern string) {
		st, m := globState(lines)
		wantKV, werr := m.GetAll(pattern)
		gotKV, gerr := st.gets(pattern)
		if (werr == nil) != (gerr == nil) || !reflect.DeepEqual(gotKV, wantKV) {
			t.Fatalf("gets(%q) = %v, %v; memkv %v, %v", pattern, gotKV, gerr, wantKV, werr)
		}
		wantV, werr := m.GetAllValues(pattern)
		gotV, gerr := st.getvs(pattern)
		if (werr == nil) != (gerr == nil) || !reflect.DeepEqual(gotV, wantV) {
			t.Fatalf("getvs(%q) = %q, %v; memkv %q, %v", pattern, gotV, gerr, wantV, werr)
		}
	})
}
