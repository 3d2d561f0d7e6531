package nginxpush

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"
)

// Client pushes peer sets to one nginx's update endpoint
// (location = /rollcall/peers in lua/rollcall-peers.conf).
type Client struct {
	URL  string       // e.g. http://127.0.0.1:8089/rollcall/peers
	HTTP *http.Client // nil: a client with a 5 s timeout per request
	// MaxBackoff caps the wait between attempts while nginx is down or
	// reloading; 0 means 1 s. The caller's ctx bounds the whole push.
	MaxBackoff time.Duration
}

// RefusedError is nginx refusing a peer set: a bad address (400), a body
// too large (413) or a full dict (507). Retrying the same set cannot help;
// nginx applied nothing and keeps its last good peers.
type RefusedError struct {
	Status int
	Msg    string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("nginx refused peers (%d): %s", e.Status, e.Msg)
}

// BaseError is nginx refusing a delta because it does not hold the
// delta's base: it lost its dict (restart), loaded an older peers file
// (reload) or missed a push. It applied nothing; send the full state.
type BaseError struct {
	Base int64
	Msg  string
}

func (e *BaseError) Error() string {
	return fmt.Sprintf("nginx refused a delta from version %d (%d): %s", e.Base, http.StatusPreconditionFailed, e.Msg)
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{Timeout: 5 * time.Second}
}

// Push sends p and returns once nginx confirms (GET) that it holds p's
// version or a newer one. A set nginx already holds (same or older version)
// is acknowledged and not applied again. While nginx is down, reloading or
// busy with another update the push is retried with backoff until ctx ends;
// a refusal (*RefusedError) returns at once.
func (c *Client) Push(ctx context.Context, p PeerSet) error {
	if err := p.Validate(); err != nil {
		return err
	}
	return c.send(ctx, p.Version, p.Encode())
}

// PushDelta sends d as Push sends a full state. nginx applies it only on
// top of d.Base; holding another version older than d.Version, it applies
// nothing and PushDelta returns a *BaseError at once: send the full state
// with Push.
func (c *Client) PushDelta(ctx context.Context, d Delta) error {
	if err := d.Validate(); err != nil {
		return err
	}
	err := c.send(ctx, d.Version, d.Encode())
	var be *BaseError
	if errors.As(err, &be) {
		be.Base = d.Base
	}
	return err
}

func (c *Client) send(ctx context.Context, version int64, body []byte) error {
	var last error // the last failure that was not ctx ending
	for attempt := 0; ; attempt++ {
		err := c.pushOnce(ctx, version, body)
		if err == nil {
			return nil
		}
		var refused *RefusedError
		var base *BaseError
		if errors.As(err, &refused) || errors.As(err, &base) {
			return err
		}
		if ctx.Err() == nil || last == nil {
			last = err
		}
		if serr := sleepCtx(ctx, c.backoff(attempt)); serr != nil {
			return fmt.Errorf("push version %d to %s: %w (last: %v)", version, c.URL, serr, last)
		}
	}
}

// pushOnce posts body and confirms with a GET: the POST's answer comes from
// one worker, the GET proves the dict (shared by all workers) holds it.
func (c *Client) pushOnce(ctx context.Context, version int64, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	req.Header.Set("Content-Type", "text/plain")
	status, msg, err := c.do(req)
	if err != nil {
		return err
	}
	switch {
	case status == http.StatusOK:
	case status == http.StatusBadRequest, status == http.StatusRequestEntityTooLarge,
		status == http.StatusInsufficientStorage, status == http.StatusForbidden:
		return &RefusedError{Status: status, Msg: strings.TrimSpace(msg)}
	case status == http.StatusPreconditionFailed:
		return &BaseError{Msg: strings.TrimSpace(msg)}
	default: // 409 another update, 502/503 while nginx restarts: retry
		return fmt.Errorf("push: nginx answered %d: %s", status, strings.TrimSpace(msg))
	}
	held, err := c.Version(ctx)
	if err != nil {
		return err
	}
	if held < version {
		// nginx lost the dict between the POST and the GET (restart):
		// push again.
		return fmt.Errorf("push: nginx holds version %d after applying %d", held, version)
	}
	return nil
}

// Version returns the version nginx holds: 0 when its dict is empty (a
// fresh start with no peers file).
func (c *Client) Version(ctx context.Context) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL, nil)
	if err != nil {
		return 0, fmt.Errorf("version: %w", err)
	}
	status, msg, err := c.do(req)
	if err != nil {
		return 0, err
	}
	if status != http.StatusOK {
		return 0, fmt.Errorf("version: nginx answered %d: %s", status, strings.TrimSpace(msg))
	}
	first, _, _ := strings.Cut(msg, "\n")
	v, err := parseVersion(first)
	if err != nil {
		return 0, fmt.Errorf("version from %s: %w", c.URL, err)
	}
	return v, nil
}

// Peers returns the whole state nginx holds (GET ?full), strictly parsed.
func (c *Client) Peers(ctx context.Context) (PeerSet, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+"?full=1", nil)
	if err != nil {
		return PeerSet{}, fmt.Errorf("peers: %w", err)
	}
	status, msg, err := c.do(req)
	if err != nil {
		return PeerSet{}, err
	}
	if status != http.StatusOK {
		return PeerSet{}, fmt.Errorf("peers: nginx answered %d: %s", status, strings.TrimSpace(msg))
	}
	return Decode([]byte(msg))
}

// maxAnswer bounds what is read back: the full state of 10,000 instances
// is about 0.5 MB.
const maxAnswer = 4 << 20

func (c *Client) do(req *http.Request) (int, string, error) {
	resp, err := c.http().Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("%s %s: %w", req.Method, c.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return 0, "", fmt.Errorf("%s %s: read answer: %w", req.Method, c.URL, err)
	}
	return resp.StatusCode, string(b), nil
}

// backoff is exponential from 10 ms with jitter, capped at MaxBackoff: a
// reload takes nginx away for milliseconds, a restart for longer.
func (c *Client) backoff(attempt int) time.Duration {
	max := c.MaxBackoff
	if max <= 0 {
		max = time.Second
	}
	d := 10 * time.Millisecond << min(attempt, 10)
	d = min(d, max)
	return d/2 + rand.N(d/2+1)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
