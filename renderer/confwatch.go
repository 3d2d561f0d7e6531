package renderer

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/rollcall/rollcall/renderer/confd"
)

// confDebounce lets an editor's write-rename-chmod sequence settle.
const confDebounce = 100 * time.Millisecond

// confWatcher signals changed when anything in <dir>/conf.d or
// <dir>/templates changes, subdirectories included (fsnotify on every
// directory, since it does not recurse and editors replace files by rename),
// or SIGHUP arrives. Events are debounced.
type confWatcher struct {
	dir     string
	log     *slog.Logger
	changed chan struct{}    // cap 1, written by Run only
	hup     <-chan os.Signal // SIGHUP, as cmd/ relays it; nil = none
	hupped  chan struct{}    // cap 1, written by Run on SIGHUP (before changed): the operator confirms held renders
}

// Run watches until ctx is done.
func (c *confWatcher) Run(ctx context.Context) {
	hup := c.hup
	w, err := fsnotify.NewWatcher()
	if err != nil {
		c.log.Error("fsnotify unavailable, templates reload on SIGHUP only", "err", err)
	} else {
		defer func() {
			if err := w.Close(); err != nil {
				c.log.Warn("close fsnotify watcher", "err", err)
			}
		}()
		c.add(w)
	}
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w != nil {
		events, errs = w.Events, w.Errors
	}
	var debounce <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			c.log.Info("SIGHUP: reloading resources, applying held renders")
			if c.hupped != nil {
				select {
				case c.hupped <- struct{}{}:
				default:
				}
			}
			c.signal()
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if filepath.Dir(ev.Name) == filepath.Clean(c.dir) {
				if b := filepath.Base(ev.Name); b != "conf.d" && b != "templates" {
					continue // renderer.toml and friends: restart to change those
				}
				c.add(w) // conf.d/ or templates/ may just have appeared
			} else if ev.Has(fsnotify.Create) {
				c.add(w) // a new subdirectory (mkdir, or moved in with its files)
			}
			c.log.Debug("file changed", "file", ev.Name, "op", ev.Op.String())
			debounce = time.After(confDebounce)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			c.log.Warn("fsnotify", "err", err)
		case <-debounce:
			debounce = nil
			c.signal()
		}
	}
}

// add watches the confdir, conf.d/ and templates/ and every directory
// below those two (hidden ones left out, as the loader leaves them out).
// Adding a directory already watched changes nothing.
func (c *confWatcher) add(w *fsnotify.Watcher) {
	c.watchDir(w, c.dir)
	for _, top := range []string{filepath.Join(c.dir, "conf.d"), filepath.Join(c.dir, "templates")} {
		err := filepath.WalkDir(top, func(p string, e fs.DirEntry, err error) error {
			switch {
			case err != nil:
				if !errors.Is(err, fs.ErrNotExist) {
					c.log.Warn("watch directory", "dir", p, "err", err)
				}
				return nil
			case !e.IsDir():
				return nil
			case p != top && strings.HasPrefix(e.Name(), "."):
				return filepath.SkipDir
			}
			c.watchDir(w, p)
			return nil
		})
		if err != nil {
			c.log.Warn("watch directory", "dir", top, "err", err)
		}
	}
}

func (c *confWatcher) watchDir(w *fsnotify.Watcher, d string) {
	if err := w.Add(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.log.Warn("watch directory", "dir", d, "err", err)
	}
}

// signal marks a change without blocking: changed holds one, and one
// pending change says all there is to say.
func (c *confWatcher) signal() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// loadResources (re)loads conf.d. A resource that fails to load keeps its
// previous version; removed ones stop; every resource is rendered again.
func (r *Renderer) loadResources(now time.Time) {
	rs, errs := confd.Loader{Prefix: r.cfg.Prefix, SyncOnly: r.cfg.SyncOnly}.LoadDir(r.cfg.ConfDir)
	states := r.carryOver(rs, errs)
	r.loadErr = r.loadErr[:0]
	for _, e := range errs {
		r.loadErr = append(r.loadErr, resourceName(r.cfg.ConfDir, e.Path))
	}
	r.m.loadFailing.Set(float64(len(errs)))
	slices.SortFunc(states, func(a, b *resState) int { return strings.Compare(a.res.Path, b.res.Path) })
	r.forgetRemoved(states)
	r.states = states
	r.indexStates(now)
	r.m.resources.Set(float64(len(states)))
	r.updateCurrent()
}

// carryOver builds the new resource states from what loaded: one whose
// path and dest are unchanged keeps its pending marks (and its known apps
// while its prefixes are the same); a new one starts from what a crash
// left on disk; one that failed to load keeps its previous state.
func (r *Renderer) carryOver(rs []*confd.Resource, errs []*confd.LoadError) []*resState {
	old := map[string]*resState{}
	for _, st := range r.states {
		old[st.res.Path] = st
	}
	var states []*resState
	for _, res := range rs {
		st := &resState{res: res, name: resourceName(r.cfg.ConfDir, res.Path), prefixes: res.WatchPrefixes()}
		for _, w := range res.Warnings {
			r.log.Warn(w, "resource", res.Path)
		}
		if o := old[res.Path]; o != nil && o.res.Dest == res.Dest {
			st.reloadPending, st.unconfirmed, st.onDisk = o.reloadPending, o.unconfirmed, o.onDisk
			if slices.Equal(o.prefixes, st.prefixes) {
				st.known = o.known // apps it rendered stay, with no instances
			}
		} else {
			st.unconfirmed = r.recover(st) // stage.go: a crash's leftovers
		}
		states = append(states, st)
	}
	for _, e := range errs {
		r.m.loadErrors.Inc()
		if o := old[e.Path]; o != nil {
			states = append(states, o)
			r.log.Error("resource failed to load, keeping its previous version", "resource", o.name, "err", e)
			continue
		}
		r.log.Error("resource failed to load", "err", e)
	}
	return states
}

// forgetRemoved logs each resource not in states and drops its metric
// series, so a removed file leaves no stale gauge behind.
func (r *Renderer) forgetRemoved(states []*resState) {
	for _, st := range r.states {
		if !slices.ContainsFunc(states, func(n *resState) bool { return n.res.Path == st.res.Path }) {
			r.log.Info("resource removed", "resource", st.name)
			for _, v := range []interface{ DeleteLabelValues(...string) bool }{r.m.lastApplySuccess, r.m.guardHeld, r.m.resourceFailing} {
				v.DeleteLabelValues(st.name)
			}
		}
	}
}

// indexStates rebuilds what is keyed by resource from r.states: the id
// map, the key index, the guard and the scheduler (which keeps each
// resource's failures and applied revision).
func (r *Renderer) indexStates(now time.Time) {
	states := r.states
	r.byID = make(map[string]*resState, len(states))
	waits := make(map[string]*confd.Wait, len(states))
	prefixes := make(map[string][]string, len(states))
	for _, st := range states {
		r.byID[st.res.Path] = st
		waits[st.res.Path] = st.res.Wait
		prefixes[st.res.Path] = st.prefixes
	}
	r.index = newKeyIndex(prefixes)
	keep := make(map[string]bool, len(states))
	for _, st := range states {
		keep[st.res.Path] = true
	}
	r.guard.Forget(keep)
	r.sched.Load(now, waits) // keeps each resource's failures and applied revision
	r.sched.Unbudgeted(r.tellPush(r.log))
}

// resourceName names a resource in logs and metrics: its path below conf.d/
// ("upstreams.toml", "nginx/app.toml": two subdirectories may hold files of
// one name).
func resourceName(confdir, path string) string {
	rel, err := filepath.Rel(filepath.Join(confdir, "conf.d"), path)
	if err != nil {
		return filepath.Base(path)
	}
	return rel
}
