package renderer

import (
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/rollcall/rollcall/renderer/confd"
)

// Mass-removal guard defaults.
const (
	DefaultGuardShare = 0.5              // hold a render that removes more than this share of a resource's instances
	DefaultGuardGrace = 30 * time.Second // apply a held render once its view held this long
	guardMinRemoved   = 2                // a render removing fewer instances is never held
)

// guard holds a render that would remove more than a share of a
// resource's instances at once — a re-list of an emptied or restored etcd,
// `etcdctl del --prefix`, a burst of deletions — keeping the last good
// file until the same view has held for the grace period or an operator
// confirms (SIGHUP). Normal changes pass: a rolling deploy (one instance
// at a time), a scale-down by at most the share (4 -> 2, 2 -> 1), an app's
// last instance going away (1 -> 0: one instance is fewer than
// guardMinRemoved). Counts are per resource, against what the resource
// last applied. It is used on the loop's goroutine only.
type guard struct {
	share float64 // 0 = the default; >= 1 = off
	grace time.Duration
	log   *slog.Logger

	base      map[string]int        // instances at the resource's last applied render
	cand      map[string]int        // instances of the render in flight
	holds     map[string]*hold      // renders held now
	confirmed map[string]bool       // held renders an operator confirmed
	holdsDone func(resource string) // counts a new hold
}

// view is the instance keys one render of a resource sees: how many, and
// the pairs to identify the set by (identify) once a render is held —
// every render counts them, only a held one hashes 10,000 keys.
type view struct {
	n   int
	kvs []confd.KV
}

// hold is one held render.
type hold struct {
	sum          uint64 // the held view's identify
	since        time.Time
	before, left int
}

func newGuard(share float64, grace time.Duration, log *slog.Logger, counted func(string)) *guard {
	if share == 0 {
		share = DefaultGuardShare
	}
	if grace == 0 {
		grace = DefaultGuardGrace
	}
	return &guard{share: share, grace: grace, log: log, base: map[string]int{}, cand: map[string]int{},
		holds: map[string]*hold{}, confirmed: map[string]bool{}, holdsDone: counted}
}

// viewOf counts the instance keys (registry.IsInstanceKey, parsed once
// by the store) among kvs.
func viewOf(kvs []confd.KV) view {
	n := 0
	for _, kv := range kvs {
		if kv.IsInstanceKey() {
			n++
		}
	}
	return view{n: n, kvs: kvs}
}

// identify hashes the set of instance keys of v.
func (v view) identify() uint64 {
	h := fnv.New64a()
	for _, kv := range v.kvs {
		if kv.IsInstanceKey() {
			h.Write([]byte(kv.Key))
			h.Write([]byte{0})
		}
	}
	return h.Sum64()
}

// Check decides whether resource id may render view v at now; share is
// the resource's own guard_share (nil: the global one). When it may not, it
// returns when to look again (the grace period's end).
func (g *guard) Check(id, name string, share *float64, v view, now time.Time) (until time.Time, held bool) {
	g.cand[id] = v.n
	base, known := g.base[id]
	removed := base - v.n
	limit := g.share
	if share != nil {
		limit = *share
	}
	if limit >= 1 || !known || removed < guardMinRemoved || float64(removed) <= limit*float64(base) {
		g.release(id, name, "")
		return time.Time{}, false
	}
	if g.confirmed[id] {
		g.release(id, name, "confirmed by the operator")
		return time.Time{}, false
	}
	h, sum := g.holds[id], v.identify()
	switch {
	case h == nil: // one line and one count per hold, however often its view changes
		g.holdsDone(name)
		g.log.Warn("mass removal held: keeping the last good file", "resource", name, "instances", base, "left", v.n,
			"share", fmt.Sprintf("%.0f%%", 100*float64(removed)/float64(base)), "grace", g.grace)
	case h.sum != sum:
		g.log.Debug("mass removal still held: the view changed, the grace period starts again", "resource", name, "left", v.n)
	}
	if h == nil || h.sum != sum {
		h = &hold{sum: sum, since: now, before: base, left: v.n}
		g.holds[id] = h
	}
	if end := h.since.Add(g.grace); now.Before(end) {
		return end, true
	}
	g.release(id, name, "the same view held for the grace period")
	return time.Time{}, false
}

// release lets a held render go (why says why; "" = it no longer removes
// too much).
func (g *guard) release(id, name, why string) {
	if _, ok := g.holds[id]; ok {
		if why == "" {
			why = "the removal shrank below the share"
		}
		g.log.Warn("mass removal released", "resource", name, "reason", why)
	}
	delete(g.holds, id)
	delete(g.confirmed, id)
}

// Commit records that resource id applied the render it was last checked
// for.
func (g *guard) Commit(id string) {
	if n, ok := g.cand[id]; ok {
		g.base[id] = n
		delete(g.cand, id)
	}
}

// Candidate is the instances of the render resource id was last checked
// for and has not applied yet; Base is what it last applied.
func (g *guard) Candidate(id string) (int, bool) { n, ok := g.cand[id]; return n, ok }
func (g *guard) Base(id string) (int, bool)      { n, ok := g.base[id]; return n, ok }

// Seed sets what resource id's installed file was rendered with (by a
// renderer that ran before this one), unless it is known already.
func (g *guard) Seed(id string, n int) {
	if _, ok := g.base[id]; !ok {
		g.base[id] = n
	}
}

// Confirm lets every render held now go at its next try.
func (g *guard) Confirm() {
	for id := range g.holds {
		g.confirmed[id] = true
	}
}

// Forget drops the state of resources no longer loaded.
func (g *guard) Forget(keep map[string]bool) {
	for _, m := range []map[string]int{g.base, g.cand} {
		for id := range m {
			if !keep[id] {
				delete(m, id)
			}
		}
	}
	for id := range g.holds {
		if !keep[id] {
			delete(g.holds, id)
			delete(g.confirmed, id)
		}
	}
}

// Reason describes the held renders for /readyz ("" = none); names maps ids
// to resource names.
func (g *guard) Reason(names func(string) string) string {
	var parts []string
	for id, h := range g.holds {
		parts = append(parts, fmt.Sprintf("%s (%d -> %d instances, held since %s)", names(id), h.before, h.left, h.since.UTC().Format(time.RFC3339)))
	}
	if len(parts) == 0 {
		return ""
	}
	slices.Sort(parts)
	return "mass removal held: " + strings.Join(parts, ", ") + "; applies after the grace period, or now on SIGHUP"
}
