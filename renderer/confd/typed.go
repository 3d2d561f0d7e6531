package confd

import (
	"fmt"
	"net/netip"
	"path"
	"slices"
	"strings"

	"github.com/rollcall/rollcall/registry"
)

// Instance is one registered instance whose value passed
// registry.ParseInstance: a canonical ip:port agreeing with its key.
// Printing it ({{.}}) gives "ip:port" or "[ip6]:port".
type Instance struct {
	Key  string         // absolute etcd key
	Addr netip.AddrPort // the parsed value
	IP   netip.Addr
	Port int

	s string // the value, which ParseInstance proved equal to Addr.String()
}

// String is the address as nginx's `server` directive takes it.
func (i Instance) String() string {
	if i.s == "" {
		return i.Addr.String()
	}
	return i.s
}

// Service is one "<app>_<env>" dir and its valid instances, sorted by address.
type Service struct {
	Name      string // "<app>_<env>", safe as an nginx upstream name
	App, Env  string
	Dir       string // the dir as the template's store sees it, e.g. "/search_PRE"
	Instances []Instance
}

// index groups the pairs by store dir, once per render. Pairs in the
// reserved subtrees under the resource's prefix (registry.Reserved: port
// claims, acks; never an app) stay out of it, so they cost nothing. The
// groups share one array (a count first, then the places): 1,000 dirs cost
// two maps, not an append's growth each.
func (st *state) index() map[string][]int {
	if st.dirs != nil {
		return st.dirs
	}
	dirOf := func(p pair) string { return p.rel[:max(strings.LastIndexByte(p.rel, '/'), 1)] }
	counts := make(map[string]int)
	n := 0
	for _, p := range st.pairs {
		if !registry.Reserved(st.r.Prefix, p.Key) {
			counts[dirOf(p)]++
			n++
		}
	}
	all := make([]int, n)
	st.dirs = make(map[string][]int, len(counts))
	for i, p := range st.pairs {
		if registry.Reserved(st.r.Prefix, p.Key) {
			continue
		}
		d := dirOf(p)
		g, ok := st.dirs[d]
		if !ok {
			g, all = all[:0:counts[d]], all[counts[d]:]
		}
		st.dirs[d] = append(g, i)
	}
	return st.dirs
}

// instances is the typed function `instances "/dir"`: the pairs directly
// below dir whose values pass registry.ParseInstance, sorted by address.
// The others are left out and reported in Rendered.Skipped.
func (st *state) instances(dir string) []Instance {
	if !isCleanAbs(dir) {
		dir = path.Join("/", dir)
	}
	if d, ok := st.insts[dir]; ok {
		return d.is
	}
	if st.insts == nil {
		st.insts = make(map[string]cachedDir)
	}
	idx := st.index()[dir]
	d, ok := st.r.cache.lookup(dir, st.pairs, idx)
	if !ok {
		d = st.parseDir(dir, idx)
	}
	st.insts[dir] = d
	return d.is
}

// parseDir is instances of dir (pairs idx) worked out anew, with the
// parses they came from when the next render may reuse them (renderCache).
func (st *state) parseDir(dir string, idx []int) cachedDir {
	is := make([]Instance, 0, len(idx))
	skipped := 0
	for _, i := range idx {
		p := st.pairs[i]
		if p.rel == dir { // the dir itself ("/") is no instance
			skipped++ // nor cached: its parse is not an instance's
			continue
		}
		a, err := p.instance()
		if err != nil {
			st.skip(p, err)
			skipped++
			continue
		}
		is = append(is, Instance{Key: p.Key, Addr: a, IP: a.Addr(), Port: int(a.Port()), s: p.Value})
	}
	slices.SortFunc(is, func(a, b Instance) int { return a.Addr.Compare(b.Addr) })
	return cachedDir{from: cacheable(st.pairs, idx, skipped), is: is}
}

// services is the typed function `services`: every "<app>_<env>" dir that
// holds keys under the resource's keys, plus every one a key names directly
// (so a listed app with no instances is still there, with none), sorted by
// name. Dirs that are no service name (_ports, _renderers, config) are not
// services.
func (st *state) services() []Service {
	names := slices.Concat(st.r.svcDirs, st.known)
	for d := range st.index() {
		if strings.Count(d, "/") == 1 && len(d) > 1 {
			names = append(names, d)
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	out := make([]Service, 0, len(names))
	for _, d := range names {
		app, env, err := registry.ParseService(d[1:])
		if err != nil {
			continue
		}
		out = append(out, Service{Name: d[1:], App: app, Env: env, Dir: d, Instances: st.instances(d)})
	}
	st.listed = st.listed[:0]
	for _, s := range out {
		st.listed = append(st.listed, s.Dir)
	}
	return out
}

// service is the typed function `service`: the resource's own service, for
// a per-app resource whose prefix is "/<app>_<env>" and keys ["/"]. Its
// instances are those directly below the prefix.
func (st *state) service() (Service, error) {
	name := path.Base(st.r.Prefix)
	app, env, err := registry.ParseService(name)
	if err != nil {
		return Service{}, fmt.Errorf("service: prefix %q does not end in /<app>_<env>: %w", st.r.Prefix, err)
	}
	return Service{Name: name, App: app, Env: env, Dir: "/", Instances: st.instances("/")}, nil
}
