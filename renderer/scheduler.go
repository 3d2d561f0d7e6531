package renderer

import (
	"slices"
	"time"

	"github.com/rollcall/rollcall/renderer/confd"
)

// Retry backoff of a failing resource.
const (
	retryBase = 500 * time.Millisecond
	retryMax  = 30 * time.Second
)

// scheduler is the loop's scheduling state: which resources wait to be
// applied and when they are due, the reload budget, retries with backoff,
// and which revision an acknowledgement may cover. It does no I/O and reads
// no clock (every call takes now), so it is tested under synctest alone.
//
// The loop calls, on one goroutine:
//
//	Load      the resources (re)loaded: a full pass
//	Changed   the store's changes up to a revision touched these resources
//	Next      when to wake up
//	Due       take the resources due now as a batch (nil: none)
//	PutBack   some of them could not be tried (not listed yet)
//	Applied   the batch ran at a snapshot revision: these succeeded, these failed,
//	          these are held, these check, install and reload apart (busy until Done)
//	Done      a resource that ran apart ended
//	Ack       the revision every resource has applied (and Idle, Failing, Since)
//
// Resources without a wait share the reload budget: a change is due at once
// when the budget has a token, else when it has one again; changes that come
// while a batch runs are taken together by the next Due. Resources with a
// wait {Min, Max} use quiescence per distinct wait instead. A failing
// resource is due again after its own backoff, or at once with a new
// change; other resources' batches never wait for it. A busy resource (its
// checks, install or reload still running) is not due until Done.
type scheduler struct {
	budget budget
	wait   *confd.Wait // the global --wait; nil = the budget
	items  map[string]*item
	pend   map[string]*item // the pending items: what a change costs is O(pending), not O(resources)
	groups map[confd.Wait]*quiet

	seen       int64     // every change up to this revision was passed to Changed
	prevChange time.Time // when the latest change arrived, for the budget's refill
	full       bool      // a full pass (start, re-list, conf reload) is pending: it spends no token
	keys       int       // changed keys since the last batch, for reloads_coalesced_total
	spent      bool      // the batch in flight took a token of the budget
	ackRev     int64
	prefixAcks map[string]int64 // per watch prefix: what every resource reading under it applied
}

// item is one resource's scheduling state.
type item struct {
	group      *quiet    // nil: the budget
	free       bool      // costs no reload (a pushed peer set): due at once, spends no token
	pending    bool      // not applied since its latest change
	fresh      bool      // a change came since it was last taken: due with its group
	failures   int       // consecutive failed applies
	since      time.Time // when its oldest unapplied change arrived
	appliedRev int64     // every change up to here is live for this resource
	retryAt    time.Time // due again without a change (after a failure's backoff, or a hold); zero = none
	busy       bool      // its checks, install or reload run apart (lanes.go): not due until Done
	held       bool      // the mass-removal guard holds its render (guard.go)
}

// schedConfig is the scheduler's part of Config.
type schedConfig struct {
	burst int           // applies the budget allows at once
	every time.Duration // one more per every; 0 = no budget
	wait  *confd.Wait   // global --wait; nil = budget
}

func newScheduler(c schedConfig) *scheduler {
	return &scheduler{
		budget: budget{burst: c.burst, every: c.every},
		wait:   c.wait,
		items:  map[string]*item{},
		pend:   map[string]*item{},
		groups: map[confd.Wait]*quiet{},

		prefixAcks: map[string]int64{},
	}
}

// Load replaces the set of resources (by id, with their own wait or nil),
// keeping the state of those it already had: every one is pending, a full
// pass.
func (s *scheduler) Load(now time.Time, waits map[string]*confd.Wait) {
	items := make(map[string]*item, len(waits))
	for id, w := range waits {
		it := s.items[id]
		if it == nil {
			it = &item{}
		}
		it.group = s.group(w)
		items[id] = it
	}
	s.items = items
	clear(s.pend)
	s.markAll(now)
}

// Unbudgeted marks the resources whose applies cost no reload (peer sets
// pushed to nginx): a change makes them due at once and spends no token of
// the reload budget. The rest are budgeted again.
func (s *scheduler) Unbudgeted(ids []string) {
	for id, it := range s.items {
		it.free = slices.Contains(ids, id)
	}
}

// group is the quiescence group of a wait (the resource's own, else the
// global one); nil for the budget.
func (s *scheduler) group(w *confd.Wait) *quiet {
	if w == nil {
		w = s.wait
	}
	if w == nil || w.Max <= 0 {
		return nil
	}
	g := s.groups[*w]
	if g == nil {
		g = &quiet{wait: *w}
		s.groups[*w] = g
	}
	return g
}

// changeSet is what the loop took from the store in one go.
type changeSet struct {
	rev   int64     // the store's revision when taken: every change up to it is in here
	since time.Time // when the oldest of these changes arrived
	keys  int       // changed keys
	all   bool      // everything changed (first list, re-list): ids is ignored
	ids   []string  // resources the changed keys touch
}

// Changed records a change set.
func (s *scheduler) Changed(now time.Time, c changeSet) {
	if c.rev < s.seen { // etcd replaced or restored: a new, shorter history
		s.ackRev = 0
		clear(s.prefixAcks)
		for _, it := range s.items {
			it.appliedRev = min(it.appliedRev, c.rev)
		}
	}
	s.keys += c.keys
	if c.all || len(c.ids) > 0 {
		s.budget.Refill(now, s.prevChange)
		s.prevChange = now
	}
	since := c.since
	if since.IsZero() {
		since = now
	}
	if c.all {
		s.markAll(now)
	}
	for _, id := range c.ids {
		if it := s.items[id]; it != nil {
			s.mark(id, it, since)
		}
	}
	s.seen = c.rev
	s.updateAck()
}

// markAll starts a full pass (start, re-list, conf reload). Its resources
// get no change time: a full pass is not a change whose latency
// change_to_install_seconds measures.
func (s *scheduler) markAll(now time.Time) {
	s.full = true
	for id, it := range s.items {
		s.mark(id, it, time.Time{})
		if it.group != nil {
			it.group.Poke(now)
		}
	}
}

// mark makes it pending. A resource that was up to date is so up to the
// revision of the previous change set: its new change comes after that.
func (s *scheduler) mark(id string, it *item, since time.Time) {
	if !it.pending {
		it.appliedRev = max(it.appliedRev, s.seen)
		it.since = since
	}
	it.pending, it.fresh = true, true
	s.pend[id] = it
	if it.group != nil && !since.IsZero() {
		it.group.Poke(since)
	}
}

// Next is when something is due; ok is false while nothing is.
func (s *scheduler) Next() (at time.Time, ok bool) {
	take := func(t time.Time) {
		if !ok || t.Before(at) {
			at, ok = t, true
		}
	}
	budgeted := false
	wanted := map[*quiet]bool{}
	for _, it := range s.pend {
		switch {
		case it.busy:
			continue
		case it.fresh && it.free:
			take(time.Time{})
		case it.fresh && it.group == nil:
			budgeted = true
		case it.fresh:
			wanted[it.group] = true
		}
		if !it.retryAt.IsZero() {
			take(it.retryAt)
		}
	}
	if budgeted {
		if s.full {
			take(time.Time{})
		} else {
			take(s.budget.Ready())
		}
	}
	for g := range wanted {
		if t, due := g.Due(); due {
			take(t)
		}
	}
	return at, ok
}

// Due takes the resources due at now, sorted; nil when none is.
func (s *scheduler) Due(now time.Time) []string {
	budgetOK := s.full || !s.budget.Ready().After(now)
	due := map[*quiet]bool{}
	for _, g := range s.groups {
		if at, ok := g.Due(); ok && !at.After(now) {
			due[g] = true
		}
	}
	var ids []string
	spend := false
	taken := map[*quiet]bool{}
	for id, it := range s.pend {
		retry := !it.retryAt.IsZero() && !it.retryAt.After(now)
		switch {
		case it.busy:
			continue
		case it.fresh && it.free:
		case it.fresh && it.group == nil && budgetOK:
			spend = true
		case it.fresh && due[it.group]:
			taken[it.group] = true
		case retry:
		default:
			continue
		}
		it.fresh, it.retryAt = false, time.Time{}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil
	}
	for g := range taken {
		g.Take()
	}
	s.spent = spend && !s.full && s.budget.Spend(now)
	s.full = false
	slices.Sort(ids)
	return ids
}

// PutBack returns resources Due took that the loop could not try (their
// keys are not listed yet): pending, due again with the next change or list.
func (s *scheduler) PutBack(ids []string) {
	for _, id := range ids {
		if it := s.items[id]; it != nil {
			it.fresh = false
		}
	}
}

// batch is how a batch went, for Applied.
type batch struct {
	rev        int64 // the snapshot it rendered: at least the last change set's
	ok, failed []string
	held       map[string]time.Time // id -> when to look again (guard.go)
	busy       []string             // their checks, installs and reloads run apart, Done follows
	reloads    int
}

// Applied records a batch that ended at now and returns how many changed
// keys shared its reloads (for reloads_coalesced_total).
func (s *scheduler) Applied(now time.Time, b batch) (coalesced int) {
	for _, id := range b.ok {
		s.done(now, id, b.rev, true)
	}
	for _, id := range b.failed {
		s.done(now, id, b.rev, false)
	}
	for id, until := range b.held {
		if it := s.items[id]; it != nil {
			it.held, it.retryAt = true, until
		}
	}
	for _, id := range b.busy {
		if it := s.items[id]; it != nil {
			it.busy = true
			// A resource tried without a change of its own (a pushed
			// peer set checked before an ack, apart) holds the ack back
			// until it lands, as it did when it was checked inline.
			if !it.pending {
				it.pending, it.since = true, time.Time{}
				s.pend[id] = it
			}
		}
	}
	// The budget is for reloads: a batch that reloaded nothing (outputs
	// unchanged, peers pushed) gives its token back.
	if s.spent && b.reloads == 0 {
		s.budget.Refund()
	}
	s.spent = false
	if b.reloads > 0 && s.keys > b.reloads {
		coalesced = s.keys - b.reloads
	}
	s.keys = 0
	s.updateAck()
	return coalesced
}

// Done records the end of what ran apart for resource id (its flight or
// its reload), which rendered the snapshot at rev.
func (s *scheduler) Done(now time.Time, id string, rev int64, ok bool) {
	s.done(now, id, rev, ok)
	s.updateAck()
}

func (s *scheduler) done(now time.Time, id string, rev int64, ok bool) {
	it := s.items[id]
	if it == nil {
		return
	}
	it.busy, it.held, it.retryAt = false, false, time.Time{}
	if !ok {
		it.failures++
		it.retryAt = now.Add(backoff(it.failures-1, retryBase, retryMax))
		// A resource tried without a change of its own (a pushed peer set
		// checked before an ack) stays pending until it applies.
		if !it.pending {
			it.pending, it.since = true, time.Time{}
			s.pend[id] = it
		}
		return
	}
	it.failures = 0
	it.appliedRev = max(it.appliedRev, rev)
	if !it.fresh {
		it.pending, it.since = false, time.Time{}
		delete(s.pend, id)
	}
}

// updateAck moves the acknowledged revision to what every resource has
// applied. It is bounded by the changes handed to Changed, not by any
// snapshot: a change the loop has not collected yet may touch a resource
// that was not in the batch, so the ack must not cover it.
func (s *scheduler) updateAck() {
	ack := s.seen
	for _, it := range s.pend {
		ack = min(ack, it.appliedRev)
	}
	s.ackRev = max(s.ackRev, ack)
}

// Ack is the revision every resource has applied; it never decreases
// within one etcd history.
func (s *scheduler) Ack() int64 { return s.ackRev }

// Idle reports whether nothing is pending or failing.
func (s *scheduler) Idle() bool { return len(s.pend) == 0 }

// Failing counts resources whose last apply failed.
func (s *scheduler) Failing() int { return len(s.FailingIDs()) }

// FailingIDs are the resources whose last apply failed, sorted.
func (s *scheduler) FailingIDs() []string {
	var ids []string
	for id, it := range s.pend {
		if it.failures > 0 {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// Held are the resources the guard holds, sorted.
func (s *scheduler) Held() []string {
	var ids []string
	for id, it := range s.pend {
		if it.held {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// PrefixAcks returns, for each prefix of the resources (id -> their watch
// prefixes), the revision every resource reading under it has applied: a
// registrar whose key only resources that are up to date read need not
// wait for a failing or held one elsewhere. Each never decreases within
// one etcd history, and none is below Ack.
func (s *scheduler) PrefixAcks(prefixes map[string][]string) map[string]int64 {
	cur := map[string]int64{}
	for id, ps := range prefixes {
		rev := s.seen
		if it := s.items[id]; it != nil && it.pending {
			rev = min(rev, it.appliedRev)
		}
		for _, p := range ps {
			if r, ok := cur[p]; !ok || rev < r {
				cur[p] = rev
			}
		}
	}
	out := make(map[string]int64, len(cur))
	for p, rev := range cur {
		rev = max(rev, s.prefixAcks[p], s.ackRev)
		s.prefixAcks[p] = rev
		out[p] = rev
	}
	return out
}

// Since is when the oldest unapplied change of resource id arrived (zero
// when none).
func (s *scheduler) Since(id string) time.Time {
	if it := s.items[id]; it != nil {
		return it.since
	}
	return time.Time{}
}
