package renderer

import (
	"time"

	"github.com/rollcall/rollcall/renderer/confd"
)

// budget throttles applies without delaying an isolated change: a token
// bucket of burst applies, refilled one per every, kept as GCRA's
// theoretical arrival time (exact with durations, no float drift). A change
// that comes after every without changes finds the bucket full again, and
// one that comes after half of every is isolated: it is applied at once,
// token or not. So only a sustained stream (changes closer together than
// half of every) is throttled, never a pattern of isolated changes such as
// add → remove → add. Isolated changes cost at most two applies per every,
// plus the bucket's one.
//
// every 0 disables the budget: every change is applied at once.
type budget struct {
	burst int
	every time.Duration

	tat  time.Time // the bucket is full at tat; a spend moves it every on
	free bool      // an isolated change is pending: the next apply costs no token
}

// Refill is told of a change at now after the previous one at prevChange:
// after every without changes the bucket is full; after half of it the
// change is isolated.
func (b *budget) Refill(now, prevChange time.Time) {
	if prevChange.IsZero() || !b.tat.After(now) {
		return // the first change, or the bucket is full anyway
	}
	switch gap := now.Sub(prevChange); {
	case gap >= b.every:
		b.tat = now
	case gap >= b.every/2:
		b.free = true
	}
}

// Ready is when the next apply may start.
func (b *budget) Ready() time.Time {
	if b.every <= 0 || b.free {
		return time.Time{}
	}
	return b.tat.Add(-time.Duration(max(b.burst, 1)-1) * b.every)
}

// Spend takes one token at now (callers check Ready first) and reports
// whether it did: the apply of an isolated change takes none.
func (b *budget) Spend(now time.Time) bool {
	if b.every <= 0 {
		return false
	}
	if b.free {
		b.free = false
		return false
	}
	if b.tat.Before(now) {
		b.tat = now
	}
	b.tat = b.tat.Add(b.every)
	return true
}

// Refund gives back the token of an apply that reloaded nothing.
func (b *budget) Refund() {
	if b.every > 0 {
		b.tat = b.tat.Add(-b.every)
	}
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
