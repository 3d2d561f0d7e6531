package renderer

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// confDebounce lets an editor's write-rename-chmod sequence settle.
const confDebounce = 100 * time.Millisecond

// confWatcher signals changed when anything in <dir>/conf.d or
// <dir>/templates changes (fsnotify on the directories, since editors
// replace files by rename) or SIGHUP arrives. Events are debounced.
type confWatcher struct {
	dir     string
	log     *slog.Logger
	changed chan struct{}    // cap 1, written by Run only
	hup     <-chan os.Signal // SIGHUP, as cmd/ relays it; nil = none
}

// Run watches until ctx is done.
func (c *confWatcher) Run(ctx context.Context) {
	hup := c.hup
	w, err := fsnotify.NewWatcher()
	if err != nil {
		c.log.Error("fsnotify unavailable, templates reload on SIGHUP only", "err", err)
	} else {
		defer w.Close()
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
			c.log.Info("SIGHUP: reloading resources")
			c.signal(ctx)
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
			c.signal(ctx)
		}
	}
}

// add watches the confdir and its two subdirectories (those that exist).
func (c *confWatcher) add(w *fsnotify.Watcher) {
	for _, d := range []string{c.dir, filepath.Join(c.dir, "conf.d"), filepath.Join(c.dir, "templates")} {
		if err := w.Add(d); err != nil && !os.IsNotExist(err) {
			c.log.Warn("watch directory", "dir", d, "err", err)
		}
	}
}

func (c *confWatcher) signal(ctx context.Context) {
	select {
	case c.changed <- struct{}{}:
	case <-ctx.Done():
	default:
	}
}
