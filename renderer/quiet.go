package renderer

import (
	"time"

	"github.com/rollcall/rollcall/renderer/confd"
)

// quiet decides when pending changes of a group of resources are applied.
//
// Without a wait (the default) an isolated change is due at once; changes
// that arrive while an apply runs or within cooldown after it ends are due
// when the cooldown ends, together: a burst costs a few applies, never one
// per change, and nothing is dropped.
//
// With a wait {Min, Max} (consul-template's quiescence) changes are due
// after Min without further changes, and at most Max after the first one.
type quiet struct {
	wait     *confd.Wait // nil or Max == 0: at once + cooldown
	cooldown time.Duration

	pending     bool
	first, last time.Time // first and latest change while pending
	readyAt     time.Time // end of the last apply + cooldown
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
	if q.wait != nil && q.wait.Max > 0 {
		at = q.last.Add(q.wait.Min)
		if m := q.first.Add(q.wait.Max); m.Before(at) {
			at = m
		}
		return at, true
	}
	at = q.first
	if at.Before(q.readyAt) {
		at = q.readyAt
	}
	return at, true
}

// Take marks the pending changes as being applied now.
func (q *quiet) Take() { q.pending = false }

// Done records that an apply ended at now: the cooldown starts.
func (q *quiet) Done(now time.Time) { q.readyAt = now.Add(q.cooldown) }

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
