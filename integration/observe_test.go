package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rollcall/rollcall/internal/waitfor"
	"github.com/rollcall/rollcall/registry"
)

// waitReady waits until /readyz says every resource is applied.
func (r *rig) waitReady(timeout time.Duration) {
	r.t.Helper()
	waitfor.Cond(r.t, timeout, "renderer not ready", func() error {
		if err := r.renderer.Exited(); err != nil {
			return err
		}
		_, err := r.get("/readyz")
		return err
	})
}

// get fetches a path from the renderer's metrics server, failing on non-200.
func (r *rig) get(path string) (string, error) {
	return fetch(r.http, "http://"+r.metrics+path)
}

// fetch GETs url with c and returns the body, failing on non-200.
func fetch(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(b))
	}
	return string(b), nil
}

// metric sums the samples of a metric whose labels include every given
// `name="value"` pair; a missing metric is 0.
func (r *rig) metric(name string, labels ...string) float64 {
	r.t.Helper()
	body, err := r.get("/metrics")
	if err != nil {
		r.t.Fatal(err)
	}
	var sum float64
	for _, v := range samples(body, name, labels...) {
		sum += v
	}
	return sum
}

// samples returns the values of a metric's samples whose labels include
// every given `name="value"` pair.
func samples(body, name string, labels ...string) []float64 {
	var out []float64
	for line := range strings.Lines(body) {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		sp := strings.LastIndexByte(rest, ' ')
		if slices.ContainsFunc(labels, func(l string) bool { return !strings.Contains(rest[:sp], l) }) {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(rest[sp+1:]), 64); err == nil {
			out = append(out, v)
		}
	}
	return out
}

// reloads returns the reload wrapper's lines: start and end (unix ns) and the
// exit status of each reload_cmd run.
func (r *rig) reloads() []reload {
	r.t.Helper()
	b, err := os.ReadFile(r.reloadLog)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		r.t.Fatal(err)
	}
	var out []reload
	for line := range strings.Lines(string(b)) {
		var start, end int64
		var rl reload
		if _, err := fmt.Sscan(line, &start, &end, &rl.code); err != nil {
			r.t.Fatalf("reload log line %q: %v", line, err)
		}
		rl.start, rl.end = time.Unix(0, start), time.Unix(0, end)
		out = append(out, rl)
	}
	return out
}

// waitApplied waits until reload_cmd has finished at least n times in all
// and the renderer is ready (applied up to its store revision).
func (r *rig) waitApplied(timeout time.Duration, n int) {
	r.t.Helper()
	waitfor.Cond(r.t, timeout, fmt.Sprintf("%d reloads not done", n), func() error {
		if got := len(r.reloads()); got < n {
			return fmt.Errorf("%d reloads", got)
		}
		return nil
	})
	r.waitReady(timeout)
}

// cooldown is the renderer's default --cooldown: the reload budget allows
// one apply per cooldown in a sustained stream, and is full again after a
// cooldown without changes.
const cooldown = time.Second

// waitIdle waits until no resource was applied for at least idle.
func (r *rig) waitIdle(timeout, idle time.Duration) {
	r.t.Helper()
	waitfor.Cond(r.t, timeout, "renderer not idle", func() error {
		if since := time.Since(r.lastApply()); since < idle {
			return fmt.Errorf("last apply %v ago", since)
		}
		return nil
	})
}

// lastApply is when a resource was last applied or found up to date, by the
// renderer's last_apply_success_timestamp_seconds.
func (r *rig) lastApply() time.Time {
	r.t.Helper()
	body, err := r.get("/metrics")
	if err != nil {
		r.t.Fatal(err)
	}
	var last float64
	for _, v := range samples(body, "rollcall_renderer_last_apply_success_timestamp_seconds") {
		last = max(last, v)
	}
	return time.Unix(0, int64(last*1e9))
}

type reload struct {
	start, end time.Time
	code       int
}

// logSince waits until the renderer's log written after offset matches re.
func (r *rig) logSince(timeout time.Duration, offset int, re *regexp.Regexp) {
	r.t.Helper()
	waitfor.Cond(r.t, timeout, fmt.Sprintf("renderer log does not match %q", re), func() error {
		if log := r.renderer.Output()[offset:]; !re.MatchString(log) {
			return fmt.Errorf("log since the change:\n%s", log)
		}
		return nil
	})
}

// waitAck waits until the renderer's acknowledgement under
// _renderers/<id> covers revision rev.
func (r *rig) waitAck(timeout time.Duration, rev int64) {
	r.t.Helper()
	key := registry.RendererKey("", r.id)
	waitfor.Cond(r.t, timeout, fmt.Sprintf("no ack of revision %d", rev), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		resp, err := r.kv.Get(ctx, key)
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return fmt.Errorf("no %s", key)
		}
		var ack registry.Ack
		if err := json.Unmarshal(resp.Kvs[0].Value, &ack); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		if ack.Revision < rev {
			return fmt.Errorf("%s = %s", key, resp.Kvs[0].Value)
		}
		return nil
	})
}
