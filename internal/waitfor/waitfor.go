// Package waitfor is the tests' one way to wait: poll a condition under a
// deadline and fail with the last error, never sleep then assert.
package waitfor

import (
	"testing"
	"time"
)

// Interval is how often conditions are polled.
const Interval = 25 * time.Millisecond

// Cond polls cond every Interval until it returns nil, failing the test with
// the last error once timeout has passed: "<what> after 5s: <err>".
func Cond(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(Interval)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s after %v: %v", what, timeout, err)
		}
		<-tick.C
	}
}
