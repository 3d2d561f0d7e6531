package registrar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"text/template"
	"time"
)

// checkTimeout bounds one readiness or health probe.
const checkTimeout = 2 * time.Second

// unhealthyAfter consecutive failed health checks deregister the instance.
const unhealthyAfter = 3

// check probes the app once; nil means ready. A nil check is always ready.
type check func(ctx context.Context) error

// checkSpec is a parsed --check: tcp, none, or an http(s) URL template.
type checkSpec struct {
	kind string // "tcp", "none", "http"
	url  *template.Template
}

// checkVars are what an http check URL may use: {{.IP}} {{.Port}} {{.Addr}}.
type checkVars struct {
	IP   string // bare address: 10.0.0.5 or ::1
	Port uint16
	Addr string // ip:port, [ip6]:port
}

func parseCheck(s string) (checkSpec, error) {
	switch {
	case s == "tcp" || s == "none":
		return checkSpec{kind: s}, nil
	case strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://"):
		t, err := template.New("check").Option("missingkey=error").Parse(s)
		if err != nil {
			return checkSpec{}, err
		}
		cs := checkSpec{kind: "http", url: t}
		// Expand with sample values so a bad field or URL is a usage error.
		if _, err := cs.expand(netip.MustParseAddrPort("127.0.0.1:8080")); err != nil {
			return checkSpec{}, err
		}
		return cs, nil
	default:
		return checkSpec{}, fmt.Errorf("%q: want tcp, none or an http:// URL", s)
	}
}

func (cs checkSpec) expand(a netip.AddrPort) (string, error) {
	var b strings.Builder
	v := checkVars{IP: a.Addr().String(), Port: a.Port(), Addr: a.String()}
	if err := cs.url.Execute(&b, v); err != nil {
		return "", err
	}
	u, err := url.Parse(b.String())
	if err != nil {
		return "", err
	}
	if u.Host == "" {
		return "", fmt.Errorf("url %q has no host", b.String())
	}
	return b.String(), nil
}

// probe returns the check for the instance at a, nil for "none".
func (cs checkSpec) probe(a netip.AddrPort) (check, error) {
	switch cs.kind {
	case "none":
		return nil, nil
	case "tcp":
		return func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, checkTimeout)
			defer cancel()
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", a.String())
			if err != nil {
				return err
			}
			return c.Close()
		}, nil
	}
	u, err := cs.expand(a)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Timeout: checkTimeout}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		// Read a little of the body so the connection can be reused.
		_, rerr := io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		cerr := resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return fmt.Errorf("GET %s: %s", u, resp.Status)
		}
		if err := errors.Join(rerr, cerr); err != nil {
			return fmt.Errorf("GET %s: read the answer: %w", u, err)
		}
		return nil
	}, nil
}

// waitReady polls chk every interval until it passes or ctx ends.
func waitReady(ctx context.Context, chk check, interval time.Duration) error {
	if chk == nil {
		return nil
	}
	for {
		if err := chk(ctx); err == nil {
			return nil
		}
		if err := sleepCtx(ctx, interval); err != nil {
			return err
		}
	}
}

// watchHealth reports readiness to set: true once chk passes, false after
// unhealthyAfter consecutive failures, true again on the next pass. It
// returns when ctx ends.
func watchHealth(ctx context.Context, chk check, interval time.Duration, set func(healthy bool, err error)) {
	poll := min(interval, 200*time.Millisecond)
	if waitReady(ctx, chk, poll) != nil {
		return
	}
	set(true, nil)
	if chk == nil {
		return
	}
	fails := 0
	for sleepCtx(ctx, interval) == nil {
		err := chk(ctx)
		switch {
		case err == nil && fails >= unhealthyAfter:
			set(true, nil)
			fallthrough
		case err == nil:
			fails = 0
		case ctx.Err() != nil:
			return
		default:
			fails++
			if fails == unhealthyAfter {
				set(false, err)
			}
		}
	}
}

// sleepCtx waits d or until ctx ends, whichever is first.
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
