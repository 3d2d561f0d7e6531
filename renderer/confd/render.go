package confd

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/kelseyhightower/memkv"
)

// KV is one etcd pair with its absolute key.
type KV struct{ Key, Value string }

// Rendered is the output of one render.
type Rendered struct {
	Bytes   []byte
	Skipped []Skipped // registered values the typed functions refused (injection, bad form), by key
	// Services are the service dirs the typed `services` returned (nil when
	// the template did not call it): a caller that passes them back as
	// known keeps an app whose last instance went away (RenderKnown).
	Services []string
}

// Skipped is a registered pair a typed function left out, and why.
type Skipped struct {
	Key, Value string // the absolute etcd key and its value
	Err        error
}

// Render executes the template over kvs: all pairs under WatchPrefixes, with
// absolute keys; pairs outside them are ignored. It does no I/O except what
// confd's functions do (getenv, lookup*, fileExists, datetime). Errors carry
// the template file and line.
func (r *Resource) Render(kvs []KV) (Rendered, error) {
	return r.RenderContext(context.Background(), kvs)
}

// RenderContext is Render with a context bounding the lookup* functions.
func (r *Resource) RenderContext(ctx context.Context, kvs []KV) (Rendered, error) {
	return r.RenderKnown(ctx, kvs, nil)
}

// RenderKnown is RenderContext where the typed `services` also returns the
// known service dirs ("/<app>_<env>", as in Rendered.Services) that have no
// keys left, with no instances: an app whose last instance went away keeps
// its upstream (nginx answers 502) and its location, never a 404.
func (r *Resource) RenderKnown(ctx context.Context, kvs []KV, known []string) (Rendered, error) {
	if r.tmpl == nil {
		return Rendered{}, fmt.Errorf("render %s: resource not loaded (use Load)", r.Path)
	}
	st := newState(ctx, r, kvs)
	st.known = known
	t, err := r.tmpl.Clone()
	if err != nil {
		return Rendered{}, fmt.Errorf("render %s: %w", r.Src, err)
	}
	var buf bytes.Buffer
	if err := t.Funcs(st.funcs()).Execute(&buf, nil); err != nil {
		return Rendered{}, err // "template: <src>:<line>:<col>: executing ..."
	}
	return Rendered{Bytes: buf.Bytes(), Skipped: st.skippedList(), Services: st.listed}, nil
}

// pair is one store entry: its key relative to the prefix (as the template
// sees it), the absolute etcd key, and the value.
type pair struct{ rel, abs, value string }

// state is what one render's functions share. Not safe for concurrent use;
// every render has its own.
type state struct {
	ctx     context.Context
	r       *Resource
	pairs   []pair
	store   *memkv.Store     // built on first use by a memkv function
	dirs    map[string][]int // store dir -> indexes into pairs, built on first use by a typed function
	insts   map[string][]Instance
	skipped map[string]Skipped
	known   []string // service dirs `services` returns even without keys
	listed  []string // the dirs `services` returned
}

// newState keeps the pairs under the resource's prefixes and maps their keys
// into the store as confd's setVars does.
func newState(ctx context.Context, r *Resource, kvs []KV) *state {
	st := &state{ctx: ctx, r: r}
	if r == nil {
		return st
	}
	st.pairs = make([]pair, 0, len(kvs))
	for _, kv := range kvs {
		if r.Touches(kv.Key) {
			st.pairs = append(st.pairs, pair{rel: storeKey(r.Prefix, kv.Key), abs: kv.Key, value: kv.Value})
		}
	}
	return st
}

// mem returns the memkv store of this render, building it once.
func (st *state) mem() *memkv.Store {
	if st.store == nil {
		s := memkv.New()
		for _, p := range st.pairs {
			s.Set(p.rel, p.value)
		}
		st.store = &s
	}
	return st.store
}

func (st *state) skip(p pair, err error) {
	if st.skipped == nil {
		st.skipped = make(map[string]Skipped)
	}
	st.skipped[p.abs] = Skipped{Key: p.abs, Value: p.value, Err: err}
}

func (st *state) skippedList() []Skipped {
	if len(st.skipped) == 0 {
		return nil
	}
	out := make([]Skipped, 0, len(st.skipped))
	for _, s := range st.skipped {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Skipped) int { return cmp.Compare(a.Key, b.Key) })
	return out
}
