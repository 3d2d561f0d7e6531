package renderer

import (
	"time"

	"github.com/rollcall/rollcall/renderer/confd"
)

// budget throttles applies without delaying an isolated change: a token
// bucket of burst applies, refilled one per every, kept as GCRA's
// theoretical arrival time (exact with durations, no float drift). A change
// that comes after every without changes finds the bucket full again: only
// a sustained stream, never a pattern of isolated changes, is throttled.
//
// every 0 disables the budget: every change is applied at once.
type budget struct {
	burst int
	every time.Duration

	tat time.Time // the bucket is full at tat; a spend moves it every on
}

// Refill fills the bucket when the previous change is at least every ago.
func (b *budget) Refill(now, prevChange time.Time) {
	if !prevChange.IsZero() && now.Sub(prevChange) >= b.every && b.tat.After(now) {
		b.tat = now
	}
}

// Ready is when the next apply may start.
func (b *budget) Ready() time.Time {
	if b.every <= 0 {
		return time.Time{}
	}
	return b.tat.Add(-time.Duration(max(b.burst, 1)-1) * b.every)
}

// Spend takes one token at now (callers check Ready first).
func (b *budget) Spend(now time.Time) {
	if b.every <= 0 {
		return
	}
	if b.tat.Before(now) {
		b.tat = now
	}
	b.tat = b.tat.Add(b.every)
}

// quiet is consul-template's quiescence for resources with a wait
// {Min, Max}: pending changes are due after Min without further changes,
// and at most Max after the first one.
type quiet struct {
	wait confd.Wait

	pending     bool
	first, last time.Time // first and latest change while pending
}

// Poke records a change at now.
func (q *quiet) Poke(now time.Time) {
	if !q.pending {
		q.pending, q.first = true, now
	}
	q.last = now
}

// Due reports when the pending changes are to be applied; ok is false while
// nothing is pending.
func (q *quiet) Due() (at time.Time, ok bool) {
	if !q.pending {
		return time.Time{}, false
	}
	at = q.last.Add(q.wait.Min)
	if m := q.first.Add(q.wait.Max); m.Before(at) {
		at = m
	}
	return at, true
}

// Take marks the pending changes as being applied now.
func (q *quiet) Take() { q.pending = false }

// alarm is one timer re-armed to the earliest deadline; its channel is nil
// while nothing is due, so a select on it never fires.
type alarm struct {
	t  *time.Timer
	on bool
}

// Set arms the alarm for at (ok) or disarms it (!ok).
func (a *alarm) Set(now, at time.Time, ok bool) {
	if !ok {
		if a.t != nil {
			a.t.Stop()
		}
		a.on = false
		return
	}
	d := max(at.Sub(now), 0)
	if a.t == nil {
		a.t = time.NewTimer(d)
	} else {
		a.t.Reset(d)
	}
	a.on = true
}

// C is the channel to select on: nil while disarmed.
func (a *alarm) C() <-chan time.Time {
	if !a.on {
		return nil
	}
	return a.t.C
}

// Stop releases the timer.
func (a *alarm) Stop() {
	if a.t != nil {
		a.t.Stop()
	}
}
