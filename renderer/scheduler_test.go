package renderer

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rollcall/rollcall/renderer/confd"
)

// defaultSched is the scheduler with the default budget.
func defaultSched(ids ...string) *scheduler {
	s := newScheduler(schedConfig{burst: DefaultReloadBurst, every: DefaultCooldown})
	waits := map[string]*confd.Wait{}
	for _, id := range ids {
		waits[id] = nil
	}
	s.Load(time.Now(), waits)
	return s
}

// simChange is one change the simulated watcher stores: at, for resource id.
type simChange struct {
	at time.Duration
	id string
}

// simRun is what a simulation saw: the batches (start, end, ids) and, per
// change, how long it waited from arrival to the start of the batch that
// applied it.
type simRun struct {
	starts []time.Duration
	ids    [][]string
	waits  []time.Duration
}

// simulate drives s as the loop does: a watcher goroutine records changes
// behind a cap-1 dirty channel (as the store does), the loop collects them
// with Changed, sleeps applyTook per batch, and reports Applied. Under
// synctest the clock is exact. It ends 5s after the last change.
func simulate(t *testing.T, s *scheduler, changes []simChange, applyTook time.Duration) simRun {
	t.Helper()
	start := time.Now()
	var mu sync.Mutex
	var queued []int // indexes of changes not yet collected
	rev := int64(1)
	dirty := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() {
		for i, c := range changes {
			select {
			case <-time.After(c.at - time.Since(start)):
			case <-ctx.Done():
				return
			}
			mu.Lock()
			queued = append(queued, i)
			mu.Unlock()
			select {
			case dirty <- struct{}{}:
			default:
			}
		}
	})
	arrived := make([]time.Duration, len(changes))
	waiting := map[string][]int{} // collected, not applied: change indexes per id
	var run simRun
	run.waits = make([]time.Duration, len(changes))
	for i := range run.waits {
		run.waits[i] = -1
	}
	collect := func() {
		mu.Lock()
		q := queued
		queued = nil
		mu.Unlock()
		if len(q) == 0 {
			return
		}
		var ids []string
		for _, i := range q {
			arrived[i] = changes[i].at
			waiting[changes[i].id] = append(waiting[changes[i].id], i)
			ids = append(ids, changes[i].id)
		}
		rev += int64(len(q))
		s.Changed(time.Now(), changeSet{rev: rev, keys: len(q), ids: slices.Compact(slices.Sorted(slices.Values(ids)))})
	}
	var al alarm
	defer al.Stop()
	end := changes[len(changes)-1].at + 5*time.Second
	for time.Since(start) < end {
		at, ok := s.Next()
		al.Set(time.Now(), at, ok)
		select {
		case <-dirty:
			collect()
		case <-al.C():
			collect() // as applyDue does: what arrived is in the batch's snapshot
			ids := s.Due(time.Now())
			if ids == nil {
				continue
			}
			now := time.Since(start)
			run.starts = append(run.starts, now)
			run.ids = append(run.ids, ids)
			for _, id := range ids {
				for _, i := range waiting[id] {
					run.waits[i] = now - arrived[i]
				}
				delete(waiting, id)
			}
			time.Sleep(applyTook)
			s.Applied(time.Now(), batch{rev: rev, ok: ids, reloads: 1})
		case <-time.After(end - time.Since(start)):
		}
	}
	for i, w := range run.waits {
		if w < 0 {
			t.Errorf("change %d (%v, %s) never applied", i, changes[i].at, changes[i].id)
		}
	}
	return run
}

// TestSchedulerIsolatedPattern is issue 8's 1(a): add an instance, remove
// one 150ms after it is served, add the next 1-2s later, again and again:
// every change is applied at once (a 1s cooldown made every removal wait).
func TestSchedulerIsolatedPattern(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := defaultSched("a")
		s.Changed(time.Now(), changeSet{rev: 1, all: true})
		if ids := s.Due(time.Now()); len(ids) != 1 {
			t.Fatalf("first list: Due = %v", ids)
		}
		s.Applied(time.Now(), batch{rev: 1, ok: []string{"a"}})
		const took = 100 * time.Millisecond // check + reload
		var changes []simChange
		at := time.Second
		for i := range 10 {
			changes = append(changes, simChange{at, "a"}, simChange{at + took + 150*time.Millisecond, "a"})
			// the next add 1s to 2s after the removal was served
			at += took + 150*time.Millisecond + took + time.Second + time.Duration(i)*100*time.Millisecond
		}
		run := simulate(t, s, changes, took)
		for i, w := range run.waits {
			if w != 0 {
				t.Errorf("change %d at %v waited %v; want 0", i, changes[i].at, w)
			}
		}
		if len(run.starts) != len(changes) {
			t.Errorf("%d applies for %d isolated changes", len(run.starts), len(changes))
		}
		t.Logf("%d changes, %d applies, worst wait %v", len(changes), len(run.starts), slices.Max(run.waits))
	})
}

// TestSchedulerBurst is issue 8's 1(b): 200 registrations and 100 removals
// over 10 apps within 1s cost at most 3 applies, and every app's last
// change is applied.
// TestSchedulerIsolatedPatternTight is the same pattern timed from the
// previous add: the next add comes 1s to 2s after it, so 0.65s to 1.65s
// after the removal, before the bucket is full again. Each change is still
// isolated (over half a cooldown after the one before) and waits for nothing.
func TestSchedulerIsolatedPatternTight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := defaultSched("a")
		s.Changed(time.Now(), changeSet{rev: 1, all: true})
		if ids := s.Due(time.Now()); len(ids) != 1 {
			t.Fatalf("first list: Due = %v", ids)
		}
		s.Applied(time.Now(), batch{rev: 1, ok: []string{"a"}})
		const took = 100 * time.Millisecond
		var changes []simChange
		at := time.Second
		for i := range 20 {
			changes = append(changes, simChange{at, "a"}, simChange{at + took + 150*time.Millisecond, "a"})
			at += time.Second + time.Duration(i%11)*100*time.Millisecond
		}
		run := simulate(t, s, changes, took)
		for i, w := range run.waits {
			if w != 0 {
				t.Errorf("change %d at %v waited %v; want 0", i, changes[i].at, w)
			}
		}
		t.Logf("%d changes, %d applies, worst wait %v", len(changes), len(run.starts), slices.Max(run.waits))
	})
}

func TestSchedulerBurst(t *testing.T) {
	for _, took := range []time.Duration{10 * time.Millisecond, 150 * time.Millisecond, 400 * time.Millisecond} {
		t.Run(took.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				apps := []string{"a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9"}
				s := defaultSched(apps...)
				s.Changed(time.Now(), changeSet{rev: 1, all: true})
				s.Due(time.Now())
				s.Applied(time.Now(), batch{rev: 1, ok: apps})
				time.Sleep(5 * time.Second)
				var changes []simChange
				for i := range 300 { // one change every 3.33ms, round-robin over the apps
					changes = append(changes, simChange{time.Duration(i) * time.Second / 300, apps[i%10]})
				}
				run := simulate(t, s, changes, took)
				if len(run.starts) > 3 {
					t.Errorf("300 changes in 1s: %d applies at %v; want <= 3", len(run.starts), run.starts)
				}
				if len(run.starts) == 0 || run.starts[0] != 0 {
					t.Errorf("first change applied at %v; want at once", run.starts)
				}
				if !s.Idle() {
					t.Error("changes left pending")
				}
				t.Logf("%d applies at %v, worst wait %v", len(run.starts), run.starts, slices.Max(run.waits))
			})
		})
	}
}

// TestSchedulerStream is issue 8's 1(c): a change every 100ms for 10s costs
// at most 12 applies, and none waits more than 1.5s.
func TestSchedulerStream(t *testing.T) {
	for _, took := range []time.Duration{10 * time.Millisecond, 120 * time.Millisecond} {
		t.Run(took.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := defaultSched("a", "b")
				s.Changed(time.Now(), changeSet{rev: 1, all: true})
				s.Due(time.Now())
				s.Applied(time.Now(), batch{rev: 1, ok: []string{"a", "b"}})
				time.Sleep(5 * time.Second)
				var changes []simChange
				for i := range 100 {
					changes = append(changes, simChange{time.Duration(i) * 100 * time.Millisecond, []string{"a", "b"}[i%2]})
				}
				run := simulate(t, s, changes, took)
				if len(run.starts) > 12 {
					t.Errorf("a change every 100ms for 10s: %d applies at %v; want <= 12", len(run.starts), run.starts)
				}
				worst := slices.Max(run.waits)
				if worst > 1500*time.Millisecond {
					t.Errorf("worst wait %v; want <= 1.5s", worst)
				}
				t.Logf("%d applies, worst wait %v", len(run.starts), worst)
			})
		})
	}
}

// TestSchedulerCooldownZero: --cooldown 0 turns the budget off: every
// change is applied as soon as the loop is free.
func TestSchedulerCooldownZero(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newScheduler(schedConfig{burst: 2})
		s.Load(time.Now(), map[string]*confd.Wait{"a": nil})
		s.Changed(time.Now(), changeSet{rev: 1, all: true})
		s.Due(time.Now())
		s.Applied(time.Now(), batch{rev: 1, ok: []string{"a"}})
		var changes []simChange
		for i := range 20 {
			changes = append(changes, simChange{time.Duration(i) * 100 * time.Millisecond, "a"})
		}
		run := simulate(t, s, changes, 10*time.Millisecond)
		if len(run.starts) != 20 || slices.Max(run.waits) != 0 {
			t.Errorf("%d applies, worst wait %v; want 20 at once", len(run.starts), slices.Max(run.waits))
		}
	})
}

// TestSchedulerWait: resources with a wait keep consul-template's
// quiescence (min after the last change, at most max after the first),
// spend no budget, and are scheduled apart from the others.
func TestSchedulerWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &confd.Wait{Min: 500 * time.Millisecond, Max: 2 * time.Second}
		s := newScheduler(schedConfig{burst: 2, every: time.Second})
		s.Load(time.Now(), map[string]*confd.Wait{"waited": w, "plain": nil})
		s.Changed(time.Now(), changeSet{rev: 1, all: true})
		time.Sleep(w.Min)
		if ids := s.Due(time.Now()); !slices.Equal(ids, []string{"plain", "waited"}) {
			t.Fatalf("first list: Due = %v", ids)
		}
		s.Applied(time.Now(), batch{rev: 1, ok: []string{"plain", "waited"}})
		time.Sleep(5 * time.Second)
		var changes []simChange
		for i := range 30 { // every 100ms for 3s: never quiet for 500ms
			changes = append(changes, simChange{time.Duration(i) * 100 * time.Millisecond, "waited"})
		}
		run := simulate(t, s, changes, 10*time.Millisecond)
		// max forces one at 2s; the rest settle 500ms after the last (2.9s).
		want := []time.Duration{2 * time.Second, 3400 * time.Millisecond}
		if !slices.Equal(run.starts, want) {
			t.Errorf("applies at %v; want %v", run.starts, want)
		}
	})
}

func TestQuietDue(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	w := confd.Wait{Min: 200 * time.Millisecond, Max: time.Second}
	tests := []struct {
		name  string
		pokes []int // ms
		want  int   // ms; -1 = nothing due
	}{
		{name: "idle", want: -1},
		{name: "min after the last change", pokes: []int{0, 100, 250}, want: 450},
		{name: "capped at max after the first", pokes: []int{0, 150, 300, 450, 600, 750, 900}, want: 1000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := &quiet{wait: w}
			for _, p := range tc.pokes {
				q.Poke(at(p))
			}
			got, ok := q.Due()
			switch {
			case tc.want < 0 && ok:
				t.Errorf("Due() = %v; want nothing due", got.Sub(t0))
			case tc.want >= 0 && (!ok || !got.Equal(at(tc.want))):
				t.Errorf("Due() = %v, %v; want %dms", got.Sub(t0), ok, tc.want)
			}
			q.Take()
			if _, ok := q.Due(); ok {
				t.Error("Due after Take: still pending")
			}
		})
	}
}

// TestSchedulerRetry: a failing resource is retried with backoff (0.5s,
// 1s, 2s, ... ±25%) while the others apply at once; a new change for it is
// applied at once; success ends the retries.
func TestSchedulerRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := defaultSched("bad", "good")
		s.Changed(time.Now(), changeSet{rev: 1, all: true})
		start := time.Now()
		var tries []time.Duration
		for range 4 {
			at, ok := s.Next()
			if !ok {
				t.Fatal("nothing due while a resource fails")
			}
			time.Sleep(time.Until(at))
			ids := s.Due(time.Now())
			if !slices.Contains(ids, "bad") {
				t.Fatalf("due %v; want bad retried", ids)
			}
			tries = append(tries, time.Since(start))
			s.Applied(time.Now(), batch{rev: 1, failed: []string{"bad"}, ok: slices.DeleteFunc(ids, func(id string) bool { return id == "bad" })})
		}
		for i, want := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second} { // ±25% jitter
			if d := tries[i+1] - tries[i]; d < want*3/4 || d > want*5/4 {
				t.Errorf("retry %d after %v; want %v ±25%% (tries at %v)", i+1, d, want, tries)
			}
		}
		if s.Failing() != 1 || s.Idle() {
			t.Errorf("Failing() = %d, Idle() = %v; want 1, false", s.Failing(), s.Idle())
		}
		// a change for it is due with the budget, not after the 4s backoff
		s.Changed(time.Now(), changeSet{rev: 2, ids: []string{"bad"}})
		if ids := s.Due(time.Now()); !slices.Equal(ids, []string{"bad"}) {
			t.Fatalf("changed failing resource: Due = %v; want [bad] at once", ids)
		}
		s.Applied(time.Now(), batch{rev: 2, ok: []string{"bad"}})
		if _, ok := s.Next(); ok || !s.Idle() || s.Ack() != 2 {
			t.Errorf("after success: Next ok %v, Idle %v, Ack %d; want nothing due, idle, 2", ok, s.Idle(), s.Ack())
		}
	})
}

// TestSchedulerAckNotAhead (issue 7 item 5): a batch rendered from a
// snapshot that already holds a later change of another resource must not
// acknowledge that change: the ack is bounded by the revision the collected
// changes reach, not by the snapshot's.
func TestSchedulerAckNotAhead(t *testing.T) {
	t.Parallel()
	s := defaultSched("a", "b")
	now := time.Now()
	s.Changed(now, changeSet{rev: 10, all: true})
	s.Applied(now, batch{rev: 10, ok: s.Due(now)})
	if s.Ack() != 10 {
		t.Fatalf("Ack() = %d; want 10", s.Ack())
	}
	now = now.Add(5 * time.Second)
	s.Changed(now, changeSet{rev: 11, ids: []string{"a"}}) // collected: a changed at 11
	ids := s.Due(now)
	// a change of b lands at 12, after the collect: the snapshot has it
	s.Applied(now, batch{rev: 12, ok: ids})
	if got := s.Ack(); got != 11 {
		t.Errorf("Ack() = %d after a batch of %v at snapshot 12; want 11 (b's change at 12 not applied)", got, ids)
	}
	s.Changed(now, changeSet{rev: 12, ids: []string{"b"}})
	if got := s.Ack(); got != 11 {
		t.Errorf("Ack() = %d with b pending; want 11", got)
	}
	s.Applied(now, batch{rev: 12, ok: s.Due(now)})
	if got := s.Ack(); got != 12 {
		t.Errorf("Ack() = %d; want 12", got)
	}
	// a change that touches no resource is covered at once
	s.Changed(now, changeSet{rev: 13})
	if got := s.Ack(); got != 13 {
		t.Errorf("Ack() = %d after an untouched change; want 13", got)
	}
	// a failing resource holds the ack at what it last applied
	s.Changed(now, changeSet{rev: 14, ids: []string{"a"}})
	s.Applied(now, batch{rev: 14, failed: s.Due(now)})
	s.Changed(now, changeSet{rev: 15, ids: []string{"b"}})
	s.Applied(now, batch{rev: 15, ok: s.Due(now)})
	if got := s.Ack(); got != 13 {
		t.Errorf("Ack() = %d with a failing since 14; want 13", got)
	}
}

// BenchmarkSchedulerChange: one change among 1,000 resources: Changed,
// Next, Due, Applied.
func BenchmarkSchedulerChange(b *testing.B) {
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = "/etc/rollcall/conf.d/app" + string(rune('a'+i%26)) + time.Duration(i).String() + ".toml"
	}
	s := newScheduler(schedConfig{burst: 2}) // no budget: every change due at once
	waits := map[string]*confd.Wait{}
	for _, id := range ids {
		waits[id] = nil
	}
	now := time.Now()
	s.Load(now, waits)
	s.Changed(now, changeSet{rev: 1, all: true})
	s.Applied(now, batch{rev: 1, ok: s.Due(now)})
	b.ReportAllocs()
	rev := int64(1)
	for b.Loop() {
		rev++
		s.Changed(now, changeSet{rev: rev, keys: 1, ids: ids[500:501]})
		if _, ok := s.Next(); !ok {
			b.Fatal("nothing due")
		}
		s.Applied(now, batch{rev: rev, ok: s.Due(now), reloads: 1})
	}
}

// TestSchedulerSince: a change's arrival is what change_to_install_seconds
// measures from; a full pass (first list, conf reload) is no change and has
// none, and an applied resource has none left.
func TestSchedulerSince(t *testing.T) {
	t.Parallel()
	s := defaultSched("a", "b")
	now := time.Now()
	s.Changed(now, changeSet{rev: 1, all: true, since: now.Add(-time.Second)})
	if got := s.Since("a"); !got.IsZero() {
		t.Errorf("Since after a full list = %v; want zero", got)
	}
	s.Applied(now, batch{rev: 1, ok: s.Due(now)})
	arrived := now.Add(time.Second)
	s.Changed(arrived.Add(time.Millisecond), changeSet{rev: 2, ids: []string{"a"}, since: arrived})
	if got := s.Since("a"); !got.Equal(arrived) {
		t.Errorf("Since(a) = %v; want the arrival %v", got, arrived)
	}
	s.Applied(now, batch{rev: 2, ok: s.Due(arrived)})
	if got := s.Since("a"); !got.IsZero() {
		t.Errorf("Since(a) after it applied = %v; want zero", got)
	}
}

// TestSchedulerApart (issue 10 item 4): a failing resource retries on its
// own backoff and never delays another's change; a busy one (its reload
// runs apart) is not due until Done; a held one is due at its hold's end;
// PrefixAcks lets a prefix nobody failing reads go ahead of the global ack.
func TestSchedulerApart(t *testing.T) {
	t.Parallel()
	s := defaultSched("a", "b")
	now := time.Now()
	s.Changed(now, changeSet{rev: 10, all: true})
	s.Applied(now, batch{rev: 10, ok: s.Due(now)})
	prefixes := map[string][]string{"a": {"/a_prod"}, "b": {"/b_prod"}}

	now = now.Add(5 * time.Second)
	s.Changed(now, changeSet{rev: 11, ids: []string{"a"}})
	s.Applied(now, batch{rev: 11, failed: s.Due(now)})
	retry, ok := s.Next()
	if !ok || retry.Before(now.Add(retryBase*3/4)) || retry.After(now.Add(retryBase*5/4)) {
		t.Fatalf("Next() after a failure = %v, %v; want a's backoff from %v", retry, ok, now)
	}
	s.Changed(now, changeSet{rev: 12, ids: []string{"b"}})
	if ids := s.Due(now); !slices.Equal(ids, []string{"b"}) {
		t.Fatalf("Due with a failing and b changed = %v; want [b] at once", ids)
	}
	s.Applied(now, batch{rev: 12, ok: []string{"b"}})
	if got := s.PrefixAcks(prefixes); got["/a_prod"] != 10 || got["/b_prod"] != 12 || s.Ack() != 10 {
		t.Errorf("PrefixAcks = %v, Ack = %d; want a at 10, b at 12, global 10", got, s.Ack())
	}
	if ids := s.Due(retry); !slices.Equal(ids, []string{"a"}) {
		t.Fatalf("Due at a's retry = %v; want [a]", ids)
	}
	// a's reload runs apart: a change of a waits for Done, b's does not.
	s.Applied(retry, batch{rev: 12, busy: []string{"a"}})
	s.Changed(retry, changeSet{rev: 13, ids: []string{"a", "b"}})
	if ids := s.Due(retry.Add(time.Hour)); !slices.Equal(ids, []string{"b"}) {
		t.Fatalf("Due with a busy = %v; want [b]", ids)
	}
	s.Applied(retry, batch{rev: 13, ok: []string{"b"}})
	if _, ok := s.Next(); ok {
		t.Error("something due while a is busy and b applied")
	}
	s.Done(retry, "a", 12, true)
	if got := s.PrefixAcks(prefixes); got["/a_prod"] != 12 || got["/b_prod"] != 13 {
		t.Errorf("PrefixAcks after a's reload = %v; want a at 12 (its change at 13 waits), b at 13", got)
	}
	later := retry.Add(2 * time.Hour)
	if ids := s.Due(later); !slices.Equal(ids, []string{"a"}) {
		t.Fatalf("Due after Done = %v; want a's change of 13", ids)
	}
	// held until a time: due then, not before, and counted neither failing nor idle.
	until := later.Add(30 * time.Second)
	s.Applied(later, batch{rev: 13, held: map[string]time.Time{"a": until}})
	if at, ok := s.Next(); !ok || !at.Equal(until) {
		t.Errorf("Next with a held = %v, %v; want %v", at, ok, until)
	}
	if s.Due(until.Add(-time.Second)) != nil || !slices.Equal(s.Held(), []string{"a"}) || s.Failing() != 0 || s.Idle() {
		t.Errorf("held: Held %v, Failing %d, Idle %v", s.Held(), s.Failing(), s.Idle())
	}
	if ids := s.Due(until); !slices.Equal(ids, []string{"a"}) {
		t.Fatalf("Due at the hold's end = %v; want [a]", ids)
	}
	s.Applied(until, batch{rev: 13, ok: []string{"a"}})
	if !s.Idle() || s.Ack() != 13 {
		t.Errorf("Idle %v, Ack %d; want true, 13", s.Idle(), s.Ack())
	}
}

// TestUnbudgeted: a resource that costs no reload (a pushed peer set) is due
// at once however spent the budget is, and spends no token; a batch that
// reloaded nothing gives its token back.
func TestUnbudgeted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := defaultSched("peers", "upstreams")
		s.Unbudgeted([]string{"peers"})
		now := time.Now()
		rev := int64(1)
		s.Changed(now, changeSet{rev: rev, all: true})
		if ids := s.Due(now); !slices.Equal(ids, []string{"peers", "upstreams"}) {
			t.Fatalf("full pass Due = %v", ids)
		}
		s.Applied(now, batch{rev: rev, ok: []string{"peers", "upstreams"}, reloads: 1})
		// Spend the budget with reloading batches of upstreams.
		for range DefaultReloadBurst {
			rev++
			s.Changed(now, changeSet{rev: rev, keys: 1, ids: []string{"upstreams"}})
			if ids := s.Due(now); !slices.Equal(ids, []string{"upstreams"}) {
				t.Fatalf("Due = %v; want [upstreams] while the budget lasts", ids)
			}
			s.Applied(now, batch{rev: rev, ok: []string{"upstreams"}, reloads: 1})
		}
		rev++
		s.Changed(now, changeSet{rev: rev, keys: 1, ids: []string{"peers", "upstreams"}})
		if at, ok := s.Next(); !ok || at.After(now) {
			t.Fatalf("Next() = %v, %v; want now: a pushed change waits for no token", at, ok)
		}
		if ids := s.Due(now); !slices.Equal(ids, []string{"peers"}) {
			t.Fatalf("Due = %v; want [peers] alone while the budget is spent", ids)
		}
		s.Applied(now, batch{rev: rev, ok: []string{"peers"}})
		if s.Ack() >= rev {
			t.Errorf("Ack() = %d covers rev %d while upstreams is pending", s.Ack(), rev)
		}
		// upstreams waits for its token, then renders unchanged: no reload,
		// the token comes back and the next change is due at once.
		at, _ := s.Next()
		time.Sleep(at.Sub(now))
		now = time.Now()
		if ids := s.Due(now); !slices.Equal(ids, []string{"upstreams"}) {
			t.Fatalf("Due = %v; want [upstreams] once a token is back", ids)
		}
		s.Applied(now, batch{rev: rev, ok: []string{"upstreams"}})
		if s.Ack() != rev {
			t.Errorf("Ack() = %d; want %d", s.Ack(), rev)
		}
		rev++
		s.Changed(now, changeSet{rev: rev, keys: 1, ids: []string{"upstreams"}})
		if at, ok := s.Next(); !ok || at.After(now) {
			t.Errorf("Next() = %v; want now: the unchanged apply gave its token back", at.Sub(now))
		}
	})
}

// TestSchedulerRecheckApart: a resource checked apart without a change of
// its own (a pushed peer set checked before an ack) holds the ack back
// until it lands, is not due meanwhile, and is up to date again once it
// lands; a failed check leaves it failing, due at its backoff.
func TestSchedulerRecheckApart(t *testing.T) {
	t.Parallel()
	s := defaultSched("peers", "b")
	now := time.Now()
	s.Changed(now, changeSet{rev: 10, all: true})
	s.Applied(now, batch{rev: 10, ok: s.Due(now)})
	for _, ok := range []bool{true, false} {
		rev := s.seen + 1
		s.Changed(now, changeSet{rev: rev, ids: []string{"b"}})
		if ids := s.Due(now); !slices.Equal(ids, []string{"b"}) {
			t.Fatalf("Due = %v; want [b]", ids)
		}
		s.Applied(now, batch{rev: rev, ok: []string{"b"}, busy: []string{"peers"}})
		if s.Ack() >= rev || s.Idle() {
			t.Errorf("Ack %d, Idle %v while peers is checked apart; want below %d, not idle", s.Ack(), s.Idle(), rev)
		}
		if ids := s.Due(now.Add(time.Hour)); ids != nil {
			t.Errorf("Due while peers is checked apart = %v; want none", ids)
		}
		s.Done(now, "peers", rev, ok)
		if ok && (s.Ack() != rev || !s.Idle()) {
			t.Errorf("Ack %d, Idle %v once peers' check landed; want %d, idle", s.Ack(), s.Idle(), rev)
		}
	}
	if !slices.Equal(s.FailingIDs(), []string{"peers"}) || s.Ack() >= s.seen {
		t.Errorf("after a failed check: failing %v, Ack %d; want peers failing, the ack below %d", s.FailingIDs(), s.Ack(), s.seen)
	}
	if at, ok := s.Next(); !ok || at.Before(now.Add(retryBase*3/4)) {
		t.Errorf("Next() = %v, %v; want peers' backoff", at, ok)
	}
}
