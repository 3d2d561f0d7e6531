package confd

import (
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/rollcall/rollcall/registry"
)

// Resource is one parsed conf.d/*.toml [template] table plus its parsed
// template, immutable after Load: safe to render from several goroutines.
type Resource struct {
	Path      string      // the .toml file
	Src       string      // absolute template path (<confdir>/templates/<src>)
	Dest      string      // the file to install, as written
	Prefix    string      // effective prefix (a non-empty global prefix replaces the resource's, as confd)
	Keys      []string    // as written
	Mode      os.FileMode // permission bits from the mode string, as confd reads it; 0 = not set (caller keeps dest's mode or 0644)
	UID, GID  int         // -1 = not set; owner/group names resolved to ids (os/user)
	CheckCmd  string      // may use {{.src}} (the staged file)
	ReloadCmd string      // may use {{.src}} and {{.dest}}
	Wait      *Wait       // per-resource `wait = "min:max"` (rollcall extension), nil = not set
	Guard     *float64    // per-resource `guard_share` (rollcall extension): the mass-removal guard's share, nil = global
	Push      string      // `push = "http://127.0.0.1:8089/rollcall/peers"` (rollcall extension): the output is a peer set pushed to nginx's Lua module; "" = not set
	Warnings  []string    // what loaded but deserves a word: unknown fields, a surprising mode

	tmpl    *template.Template // parsed; cloned and bound to a store per render
	watch   []string           // WatchPrefixes, computed once
	svcDirs []string           // store dirs named by Keys that are "/<app>_<env>"
	cache   *renderCache       // what the last render worked out; nil: none kept
}

// Wait is consul-template's quiescence window: render after Min of quiet,
// at most Max after the first change.
type Wait struct{ Min, Max time.Duration }

// ParseWait parses "min:max" or "min" (then max = 4*min, as consul-template).
func ParseWait(s string) (Wait, error) {
	minS, maxS, both := strings.Cut(strings.TrimSpace(s), ":")
	var w Wait
	var err error
	if w.Min, err = time.ParseDuration(strings.TrimSpace(minS)); err != nil {
		return Wait{}, fmt.Errorf("parse wait %q: %w", s, err)
	}
	w.Max = 4 * w.Min
	if both {
		if w.Max, err = time.ParseDuration(strings.TrimSpace(maxS)); err != nil {
			return Wait{}, fmt.Errorf("parse wait %q: %w", s, err)
		}
	}
	switch {
	case w.Min < 0 || w.Max < 0:
		return Wait{}, fmt.Errorf("parse wait %q: negative duration", s)
	case w.Max < w.Min:
		return Wait{}, fmt.Errorf("parse wait %q: max %v is less than min %v", s, w.Max, w.Min)
	}
	return w, nil
}

// String formats w as ParseWait reads it.
func (w Wait) String() string { return w.Min.String() + ":" + w.Max.String() }

// watchPrefixes joins prefix and each key as confd does (path.Join), then
// sorts and drops duplicates and prefixes covered by another.
func watchPrefixes(prefix string, keys []string) []string {
	ps := make([]string, 0, len(keys))
	for _, k := range keys {
		ps = append(ps, path.Join(prefix, k))
	}
	return registry.Collapse(ps)
}

// storeKey is where confd's setVars puts an etcd key in the template's store:
// path.Join("/", strings.TrimPrefix(key, prefix)).
// The common cases (prefix "/", or a clean key below a clean prefix) slice
// the key instead of allocating.
func storeKey(prefix, key string) string {
	rel := strings.TrimPrefix(key, prefix)
	if len(rel) < len(key) && !strings.HasPrefix(rel, "/") && strings.HasSuffix(prefix, "/") {
		rel = key[len(prefix)-1:] // "/" + rel without a copy
	}
	if isCleanAbs(rel) {
		return rel
	}
	return path.Join("/", rel)
}

// isCleanAbs reports whether path.Join("/", s) == s.
func isCleanAbs(s string) bool {
	if s == "/" {
		return true
	}
	if !strings.HasPrefix(s, "/") || strings.HasSuffix(s, "/") {
		return false
	}
	for seg := range strings.SplitSeq(s[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// serviceDirs lists the store dirs named by keys that are service dirs
// ("/<app>_<env>"): the typed `services` function shows them even without
// instances.
func serviceDirs(prefix string, keys []string) []string {
	var dirs []string
	for _, k := range keys {
		d := storeKey(prefix, path.Join(prefix, k))
		if _, _, err := registry.ParseService(d[1:]); err == nil && strings.Count(d, "/") == 1 {
			dirs = append(dirs, d)
		}
	}
	slices.Sort(dirs)
	return slices.Compact(dirs)
}

// WatchPrefixes are the absolute etcd key prefixes this resource reads:
// prefix+key for each key (confd's path.Join rule, so "/" and "" work),
// sorted, without duplicates or prefixes another one covers.
func (r *Resource) WatchPrefixes() []string { return slices.Clone(r.watch) }

// Touches reports whether a change of key affects this resource
// (registry.Covers: "/app_prod" covers "/app_prod" and "/app_prod/x", never
// "/app_production").
func (r *Resource) Touches(key string) bool {
	for _, p := range r.watch {
		if registry.Covers(p, key) {
			return true
		}
	}
	return false
}
