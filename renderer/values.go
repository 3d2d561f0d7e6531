package renderer

import (
	"errors"
	"log/slog"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rollcall/rollcall/registry"
	"github.com/rollcall/rollcall/renderer/confd"
)

// maxLoggedValue bounds how much of a refused value a log line carries.
const maxLoggedValue = 64

// maxLoggedKey bounds how much of a refused key a log line carries.
const maxLoggedKey = 256

// valueGate keeps registered values data, never config: a key of the
// instance form <prefix>/<app>_<env>/<ip>-<port> whose value is not exactly
// the canonical ip:port its key names is withheld from the store (strict),
// so every template function — getv, getvs, gets, ls, exists, ... — sees no
// such key. Other keys pass untouched. Each refused key is logged and
// counted once, when it appears or its value changes. The watcher feeds it
// from one goroutine at a time; the mutex also covers the loop's
// reports of typed-function refusals.
type valueGate struct {
	strict     bool
	log        *slog.Logger
	counter    prometheus.Counter
	dirCounter prometheus.Counter // keys under an invalid service dir; nil = counter

	mu      sync.Mutex
	refused map[string]string // key -> the value last reported
}

func newValueGate(strict bool, log *slog.Logger, counter prometheus.Counter) *valueGate {
	return &valueGate{strict: strict, log: log, counter: counter, refused: map[string]string{}}
}

// errBadDir: a key of the instance form (<dir>/<ip>-<port>) whose dir
// looks like a service (it holds a "_") but is no valid <app>_<env>, such
// as /odd;}server{listen 82;}_env/1.2.3.4-80. Its name is no data a
// template may write.
var errBadDir = errors.New("key under a dir that is no valid <app>_<env>")

// checkValue returns why key=value is an instance key with a bad value, or
// a key under an invalid service dir, or nil.
func checkValue(key, value string) error {
	if !registry.IsInstanceKey(key) {
		if badServiceDir(key) {
			return errBadDir
		}
		return nil
	}
	_, err := registry.ParseInstance(key, value)
	return err
}

// badServiceDir reports whether key is <...>/<dir>/<ip>-<port> with a dir
// holding "_" that registry.ParseService refuses.
func badServiceDir(key string) bool {
	i := strings.LastIndexByte(key, '/')
	if i <= 0 {
		return false
	}
	if _, err := registry.ParseInstanceName(key[i+1:]); err != nil {
		return false
	}
	dir := key[strings.LastIndexByte(key[:i], '/')+1 : i]
	if !strings.Contains(dir, "_") {
		return false
	}
	_, _, err := registry.ParseService(dir)
	return err != nil
}

// admit reports whether a put of key=value may enter the store.
func (g *valueGate) admit(key, value string) bool {
	err := checkValue(key, value)
	if err == nil {
		g.forget(key, value)
		return true
	}
	switch {
	case errors.Is(err, errBadDir) && g.strict:
		g.report(key, value, err, "key under an invalid service dir withheld from templates")
	case errors.Is(err, errBadDir):
		g.report(key, value, err, "key under an invalid service dir passed to templates (strict_values = false)")
	case g.strict:
		g.report(key, value, err, "invalid instance value withheld from templates")
	default:
		g.report(key, value, err, "invalid instance value passed to templates (strict_values = false)")
	}
	return !g.strict
}

// change filters one watch event: a withheld put becomes a delete, so a key
// whose value turns invalid disappears from the templates.
func (g *valueGate) change(c change) change {
	if c.del {
		g.forget(c.key, "")
		return c
	}
	if !g.admit(c.key, c.value) {
		return change{key: c.key, del: true}
	}
	return c
}

// filter removes the withheld pairs from a complete list, and forgets the
// keys the list no longer holds (one that comes back is reported again).
func (g *valueGate) filter(kvs map[string]string) {
	var withheld []string
	for k, v := range kvs {
		if !g.admit(k, v) {
			withheld = append(withheld, k)
		}
	}
	g.mu.Lock()
	for k := range g.refused {
		if _, ok := kvs[k]; !ok {
			delete(g.refused, k)
		}
	}
	g.mu.Unlock()
	for _, k := range withheld {
		delete(kvs, k)
	}
}

// skipped reports a value a typed function refused at render time (a value
// the gate let through: not an instance key, or strict_values off).
func (g *valueGate) skipped(key, value string, err error) {
	g.report(key, value, err, "invalid value skipped by a typed function")
}

// skippedAll reports every value a render's typed functions refused.
func (g *valueGate) skippedAll(ss []confd.Skipped) {
	for _, s := range ss {
		g.skipped(s.Key, s.Value, s.Err)
	}
}

func (g *valueGate) report(key, value string, err error, msg string) {
	g.mu.Lock()
	old, seen := g.refused[key]
	g.refused[key] = value
	g.mu.Unlock()
	if seen && old == value {
		return
	}
	if c := g.dirCounter; c != nil && errors.Is(err, errBadDir) {
		c.Inc()
	} else {
		g.counter.Inc()
	}
	g.log.Warn(msg, "key", truncate(key, maxLoggedKey), "value", truncate(value, maxLoggedValue), "err", truncate(err.Error(), maxLoggedKey))
}

// forget drops key's report unless it was about value (a typed function's
// refusal of an unchanged value stands: it is not logged again).
func (g *valueGate) forget(key, value string) {
	g.mu.Lock()
	if v, ok := g.refused[key]; ok && (v != value || value == "") {
		delete(g.refused, key)
	}
	g.mu.Unlock()
}

// truncate shortens s to at most n bytes, saying so.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "...(truncated)"
}
