package integration_test

import (
	"fmt"
	"testing"
	"time"
)

// TestAddRemoveAddServedAtOnce (issue 8, 1(a)): in the pattern of a rolling
// deploy (add an instance, remove one 150ms after the add is served, add the
// next 1-2s later) every change is served within 600ms. The fixed 1s
// cooldown this replaced made each removal wait for it (~1s); the reload
// budget applies every change of this pattern at once.
func TestAddRemoveAddServedAtOnce(t *testing.T) {
	const deadline = 600 * time.Millisecond
	r := newRig(t)
	r.startShipped()
	r.startRenderer()
	r.waitReady(10 * time.Second)
	r.serve(5*time.Second, "a_test", "base") // the app is never without an instance
	r.waitIdle(5*time.Second, cooldown+200*time.Millisecond)

	var took []time.Duration
	change := func(what string, do func(), want ...string) {
		start := time.Now()
		do()
		r.waitServed(deadline, "a_test", want...)
		took = append(took, time.Since(start))
		t.Logf("%s: served through nginx after %v", what, took[len(took)-1].Round(time.Millisecond))
	}
	gaps := []time.Duration{1000, 1300, 1600, 1900} // ms between a removal served and the next add
	for i, gap := range gaps {
		name := fmt.Sprintf("b%d", i)
		b := newBackend(t, name)
		var key string
		change("add "+name, func() { key = r.register("a_test", b) }, "base", name)
		time.Sleep(150 * time.Millisecond) // the scenario's pace, not a wait for a condition
		change("remove "+name, func() { r.del(key) }, "base")
		if i < len(gaps)-1 {
			time.Sleep(gap * time.Millisecond)
		}
	}
	t.Logf("%d changes, each served within %v: %v", len(took), deadline, took)
}
