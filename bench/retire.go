package main

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// waitOnlyGen waits until only the current generation answers and returns
// the first of six answers in a row from it (as a deregistration is timed).
func (n *nginx) waitOnlyGen(ctx context.Context) (time.Time, error) {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	want := fmt.Sprint(n.gen)
	var first time.Time
	run := 0
	err := poll(ctx, 10*time.Second, probeGap, "only generation "+want+" answers", func() error {
		resp, err := c.Get(n.URL("/_gen"))
		if err != nil {
			return err
		}
		b, err := readBody(resp)
		if err != nil || string(b) != want {
			run = 0
			return fmt.Errorf("got %q (%v)", b, err)
		}
		if run == 0 {
			first = time.Now()
		}
		if run++; run < 6 {
			return fmt.Errorf("%d answers from it", run)
		}
		return nil
	})
	return first, err
}
