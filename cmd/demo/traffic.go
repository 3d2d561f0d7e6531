package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// traffic counts answers per backend and failed requests.
type traffic struct {
	mu       sync.Mutex
	byAddr   map[string]int
	failed   int
	firstErr error
}

func newTraffic() *traffic { return &traffic{byAddr: map[string]int{}} }

// get sends one GET; the answer's X-Backend names the backend. A transport
// error on a reused keep-alive connection (nginx closes idle client
// connections when it reloads) is retried once, as any HTTP client would.
func (tr *traffic) get(ctx context.Context, c *http.Client, url string) {
	addr, err := get(ctx, c, url)
	if err != nil && ctx.Err() == nil {
		if _, ok := err.(statusError); !ok {
			addr, err = get(ctx, c, url)
		}
	}
	if ctx.Err() != nil {
		return
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if err != nil {
		tr.failed++
		if tr.firstErr == nil {
			tr.firstErr = err
		}
		return
	}
	tr.byAddr[addr]++
}

type statusError int

func (e statusError) Error() string { return fmt.Sprintf("status %d", int(e)) }

func get(ctx context.Context, c *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	if err = errors.Join(err, resp.Body.Close()); err != nil {
		return "", err
	}
	if resp.StatusCode/100 != 2 {
		return "", statusError(resp.StatusCode)
	}
	return resp.Header.Get("X-Backend"), nil
}

// run keeps clients goroutines sending requests until ctx ends.
func (tr *traffic) run(ctx context.Context, clients int, url string) {
	c := &http.Client{Timeout: 5 * time.Second}
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for ctx.Err() == nil {
				tr.get(ctx, c, url)
				select {
				case <-ctx.Done():
				case <-time.After(10 * time.Millisecond):
				}
			}
		})
	}
	wg.Wait()
}

// total is the number of answered requests.
func (tr *traffic) total() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for _, c := range tr.byAddr {
		n += c
	}
	return n
}

// String is "addr=count ..." sorted by address, then the failures.
func (tr *traffic) String() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	addrs := make([]string, 0, len(tr.byAddr))
	for a := range tr.byAddr {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	parts := make([]string, len(addrs))
	for i, a := range addrs {
		parts[i] = fmt.Sprintf("%s=%d", a, tr.byAddr[a])
	}
	return strings.Join(parts, "  ")
}
