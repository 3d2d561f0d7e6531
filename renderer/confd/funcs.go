package confd

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/kelseyhightower/memkv"
)

// lookupTimeout bounds each lookup* call (confd has none: a dead resolver
// hung the render).
const lookupTimeout = 5 * time.Second

// maxSeq bounds seq: confd would allocate whatever it was asked for.
const maxSeq = 1 << 20

// funcs is the template FuncMap of one render: memkv v0.1.1's store
// functions over this render's store, confd v0.16's helpers with confd's
// semantics, and rollcall's typed functions. Built per render; nothing global.
func (st *state) funcs() template.FuncMap {
	return template.FuncMap{
		// memkv v0.1.1 (the store is built on first use).
		"exists": func(key string) bool { return st.mem().Exists(key) },
		"get":    func(key string) (memkv.KVPair, error) { return st.mem().Get(key) },
		"gets":   st.gets, // glob.go: a literal dir's pairs from an index
		"getv":   func(key string, v ...string) (string, error) { return st.mem().GetValue(key, v...) },
		"getvs":  st.getvs,
		"ls":     func(dir string) []string { return st.mem().List(dir) },
		"lsdir":  func(dir string) []string { return st.mem().ListDir(dir) },

		// confd v0.16.
		"base":           path.Base,
		"dir":            path.Dir,
		"split":          strings.Split,
		"join":           strings.Join,
		"json":           unmarshalJSONObject,
		"jsonArray":      unmarshalJSONArray,
		"map":            createMap,
		"getenv":         getenv,
		"datetime":       time.Now,
		"toUpper":        strings.ToUpper,
		"toLower":        strings.ToLower,
		"contains":       strings.Contains,
		"replace":        strings.Replace,
		"trimSuffix":     strings.TrimSuffix,
		"lookupIP":       st.lookupIP,
		"lookupIPV4":     func(host string) []string { return filterIPs(st.lookupIP(host), ".") },
		"lookupIPV6":     func(host string) []string { return filterIPs(st.lookupIP(host), ":") },
		"lookupSRV":      st.lookupSRV,
		"fileExists":     fileExists,
		"base64Encode":   func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) },
		"base64Decode":   base64Decode,
		"parseBool":      strconv.ParseBool,
		"reverse":        reverse,
		"sortByLength":   sortByLength,
		"sortKVByLength": sortKVByLength,
		"add":            func(a, b int) int { return a + b },
		"sub":            func(a, b int) int { return a - b },
		"mul":            func(a, b int) int { return a * b },
		"div":            div,
		"mod":            mod,
		"seq":            seq,
		"atoi":           strconv.Atoi,

		// rollcall: typed, validated registry data.
		"services":  st.services,
		"service":   st.service,
		"instances": st.instances,
	}
}

// getenv is os.Getenv with an optional default for an unset or empty variable.
func getenv(key string, def ...string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	if len(def) > 0 {
		return def[0]
	}
	return ""
}

func unmarshalJSONObject(data string) (map[string]any, error) {
	var v map[string]any
	err := json.Unmarshal([]byte(data), &v)
	return v, err
}

func unmarshalJSONArray(data string) ([]any, error) {
	var v []any
	err := json.Unmarshal([]byte(data), &v)
	return v, err
}

// createMap builds a map from key, value, key, value, ...
func createMap(kv ...any) (map[string]any, error) {
	if len(kv)%2 != 0 {
		return nil, errors.New("invalid map call")
	}
	m := make(map[string]any, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		k, ok := kv[i].(string)
		if !ok {
			return nil, errors.New("map keys must be strings")
		}
		m[k] = kv[i+1]
	}
	return m, nil
}

// lookupIP resolves host and returns its addresses as sorted strings; nil on
// any error (confd).
func (st *state) lookupIP(host string) []string {
	ctx, cancel := context.WithTimeout(st.ctx, lookupTimeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return nil
	}
	ips := make([]string, len(addrs))
	for i, a := range addrs {
		ips[i] = a.IP.String()
	}
	slices.Sort(ips)
	return ips
}

// filterIPs keeps the addresses containing sep ("." for IPv4, ":" for IPv6),
// as confd's lookupIPV4/lookupIPV6.
func filterIPs(ips []string, sep string) []string {
	var out []string
	for _, ip := range ips {
		if strings.Contains(ip, sep) {
			out = append(out, ip)
		}
	}
	return out
}

// lookupSRV resolves SRV records, sorted by target, port, priority and weight
// formatted together (confd's order); empty on error.
func (st *state) lookupSRV(service, proto, name string) []*net.SRV {
	ctx, cancel := context.WithTimeout(st.ctx, lookupTimeout)
	defer cancel()
	_, addrs, err := net.DefaultResolver.LookupSRV(ctx, service, proto, name)
	if err != nil {
		return []*net.SRV{}
	}
	key := func(s *net.SRV) string { return fmt.Sprintf("%s%d%d%d", s.Target, s.Port, s.Priority, s.Weight) }
	slices.SortStableFunc(addrs, func(a, b *net.SRV) int { return cmp.Compare(key(a), key(b)) })
	return addrs
}

// fileExists is confd's isFileExist: false only when stat says "not exist".
func fileExists(p string) bool {
	_, err := os.Stat(p)
	return !os.IsNotExist(err)
}

func base64Decode(s string) (string, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	return string(b), err
}

// reverse reverses a []string or []memkv.KVPair in place and returns it; any
// other value (memkv.KVPairs from gets included, as in confd) comes back as is.
func reverse(v any) any {
	switch s := v.(type) {
	case []string:
		slices.Reverse(s)
	case []memkv.KVPair:
		slices.Reverse(s)
	}
	return v
}

// sortByLength sorts in place by length, shortest first; ties keep their
// order (confd's sort.Sort does too for the short lists templates use).
func sortByLength(v []string) []string {
	slices.SortStableFunc(v, func(a, b string) int { return cmp.Compare(len(a), len(b)) })
	return v
}

// sortKVByLength sorts pairs in place by key length, shortest first.
func sortKVByLength(v []memkv.KVPair) []memkv.KVPair {
	slices.SortStableFunc(v, func(a, b memkv.KVPair) int { return cmp.Compare(len(a.Key), len(b.Key)) })
	return v
}

var errDivZero = errors.New("division by zero")

// div is a / b; confd panics when b is 0, here it is a template error.
func div(a, b int) (int, error) {
	if b == 0 {
		return 0, errDivZero
	}
	return a / b, nil
}

// mod is a % b; confd panics when b is 0, here it is a template error.
func mod(a, b int) (int, error) {
	if b == 0 {
		return 0, errDivZero
	}
	return a % b, nil
}

// seq is GNU seq: first..last inclusive; empty when last < first.
func seq(first, last int) ([]int, error) {
	if last < first {
		return nil, nil
	}
	n := uint64(last) - uint64(first) + 1 // no overflow, even from MinInt to MaxInt-1
	if n > maxSeq || n == 0 {
		return nil, fmt.Errorf("seq %d %d: more than %d numbers", first, last, maxSeq)
	}
	s := make([]int, n)
	for i := range s {
		s[i] = first + i
	}
	return s, nil
}
