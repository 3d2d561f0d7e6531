package renderer

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rollcall/rollcall/renderer/confd"
)

func TestQuietDue(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	tests := []struct {
		name   string
		wait   *confd.Wait
		doneAt int   // ms the previous apply ended; -1 = none
		pokes  []int // ms
		want   int   // ms; -1 = nothing due
	}{
		{name: "idle", doneAt: -1, want: -1},
		{name: "isolated change at once", doneAt: -1, pokes: []int{100}, want: 100},
		{name: "long after an apply: at once", doneAt: 0, pokes: []int{5000}, want: 5000},
		{name: "within cooldown: at its end", doneAt: 0, pokes: []int{200}, want: 1000},
		{name: "burst within cooldown: one apply", doneAt: 0, pokes: []int{10, 20, 900}, want: 1000},
		{name: "burst after cooldown: first change", doneAt: 0, pokes: []int{1500, 1600}, want: 1500},
		{name: "wait: min after the last change", wait: &confd.Wait{Min: 200 * time.Millisecond, Max: time.Second}, doneAt: -1,
			pokes: []int{0, 100, 250}, want: 450},
		{name: "wait: capped at max after the first", wait: &confd.Wait{Min: 200 * time.Millisecond, Max: time.Second}, doneAt: -1,
			pokes: []int{0, 150, 300, 450, 600, 750, 900}, want: 1000},
		{name: "wait: ignores cooldown", wait: &confd.Wait{Min: 100 * time.Millisecond, Max: time.Second}, doneAt: 0,
			pokes: []int{10}, want: 110},
		{name: "wait 0:0 is immediate", wait: &confd.Wait{}, doneAt: -1, pokes: []int{30}, want: 30},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := &quiet{wait: tc.wait, cooldown: time.Second}
			if tc.doneAt >= 0 {
				q.Done(at(tc.doneAt))
			}
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

// simulate drives a quiet and an alarm the way Run does: changes arrive on
// a channel, an apply takes applyTook. It returns when each apply started
// and the time of the last change.
func simulate(t *testing.T, q *quiet, changes []time.Duration, applyTook time.Duration) (applies []time.Duration, last time.Duration) {
	start := time.Now()
	ch := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		for _, d := range changes {
			time.Sleep(d - time.Since(start))
			select { // cap-1 dirty flag, as the store does
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	var al alarm
	defer al.Stop()
	for {
		at, ok := q.Due()
		al.Set(time.Now(), at, ok)
		select {
		case <-ch:
			q.Poke(time.Now())
		case <-al.C():
			q.Take()
			applies = append(applies, time.Since(start))
			time.Sleep(applyTook)
			q.Done(time.Now())
		case <-time.After(10 * time.Second):
			return applies, changes[len(changes)-1]
		case <-ctx.Done():
			return applies, 0
		}
	}
}

func TestQuietBurst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var changes []time.Duration
		for i := range 200 { // 200 changes within one second
			changes = append(changes, time.Duration(i)*5*time.Millisecond)
		}
		q := &quiet{cooldown: time.Second}
		applies, last := simulate(t, q, changes, 50*time.Millisecond)
		if len(applies) > 3 {
			t.Errorf("200 changes in 1s: %d applies at %v; want <= 3", len(applies), applies)
		}
		if len(applies) == 0 || applies[0] != 0 {
			t.Errorf("first change applied at %v; want at once", applies)
		}
		if applies[len(applies)-1] < last {
			t.Errorf("last apply at %v before the last change at %v: a change was dropped", applies[len(applies)-1], last)
		}
	})
}

func TestQuietIsolatedChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := &quiet{cooldown: time.Second}
		applies, _ := simulate(t, q, []time.Duration{0, 3 * time.Second, 6 * time.Second}, 50*time.Millisecond)
		want := []time.Duration{0, 3 * time.Second, 6 * time.Second}
		if len(applies) != len(want) {
			t.Fatalf("applies at %v; want %v", applies, want)
		}
		for i := range want {
			if applies[i] != want[i] {
				t.Errorf("apply %d at %v; want %v (no added wait)", i, applies[i], want[i])
			}
		}
	})
}

func TestQuietWaitTrailing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := &quiet{wait: &confd.Wait{Min: 500 * time.Millisecond, Max: 2 * time.Second}, cooldown: time.Second}
		var changes []time.Duration
		for i := range 30 { // a change every 100ms for 3s: never quiet for 500ms
			changes = append(changes, time.Duration(i)*100*time.Millisecond)
		}
		applies, _ := simulate(t, q, changes, 10*time.Millisecond)
		// max forces one at 2s; the rest settle 500ms after the last (2.9s).
		want := []time.Duration{2 * time.Second, 3400 * time.Millisecond}
		if len(applies) != 2 || applies[0] != want[0] || applies[1] != want[1] {
			t.Errorf("applies at %v; want %v", applies, want)
		}
	})
}
