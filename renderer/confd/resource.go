package confd

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/BurntSushi/toml"

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
	Mode      os.FileMode // parsed from the "0644" string; 0 = not set (caller keeps dest's mode or 0644)
	UID, GID  int         // -1 = not set; owner/group names resolved to ids (os/user)
	CheckCmd  string      // may use {{.src}} (the staged file)
	ReloadCmd string      // may use {{.src}} and {{.dest}}
	Wait      *Wait       // per-resource `wait = "min:max"` (rollcall extension), nil = not set
	Guard     *float64    // per-resource `guard_share` (rollcall extension): the mass-removal guard's share, nil = global

	tmpl    *template.Template // parsed; cloned and bound to a store per render
	watch   []string           // WatchPrefixes, computed once
	svcDirs []string           // store dirs named by Keys that are "/<app>_<env>"
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

// LoadError names the file (and template line, when a template fails) that
// could not load.
type LoadError struct {
	Path string
	Err  error
}

func (e *LoadError) Error() string { return "load " + e.Path + ": " + e.Err.Error() }
func (e *LoadError) Unwrap() error { return e.Err }

// tomlTemplate is the [template] table: confd v0.16's fields, owner/group
// (documented by confd, honoured here) and wait.
type tomlTemplate struct {
	Src       string   `toml:"src"`
	Dest      string   `toml:"dest"`
	Keys      []string `toml:"keys"`
	Prefix    string   `toml:"prefix"`
	Owner     string   `toml:"owner"`
	Group     string   `toml:"group"`
	UID       *int     `toml:"uid"`
	GID       *int     `toml:"gid"`
	Mode      string   `toml:"mode"`
	CheckCmd  string   `toml:"check_cmd"`
	ReloadCmd string   `toml:"reload_cmd"`
	Wait      string   `toml:"wait"`
	Guard     *float64 `toml:"guard_share"`
}

// LoadDir loads every <confdir>/conf.d/*.toml in name order (hidden files
// left out); one bad file never stops the others. A resource whose dest another (earlier) resource
// already writes is refused: two writers of one file would fight.
func LoadDir(confdir, globalPrefix string) ([]*Resource, []*LoadError) {
	dir := filepath.Join(confdir, "conf.d")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, []*LoadError{{Path: dir, Err: err}}
	}
	var (
		rs    []*Resource
		errs  []*LoadError
		dests = map[string]string{}
	)
	for _, e := range ents {
		// Hidden files are editors' (".#r.toml" locks, swap files).
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".toml") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		r, err := Load(confdir, p, globalPrefix)
		if err != nil {
			var le *LoadError
			if !errors.As(err, &le) {
				le = &LoadError{Path: p, Err: err}
			}
			errs = append(errs, le)
			continue
		}
		dest := filepath.Clean(r.Dest)
		if other, ok := dests[dest]; ok {
			errs = append(errs, &LoadError{Path: p, Err: fmt.Errorf("dest %s is already written by %s", r.Dest, other)})
			continue
		}
		dests[dest] = p
		rs = append(rs, r)
	}
	return rs, errs
}

// Load loads one resource file (templates resolved against <confdir>/templates).
// Errors are *LoadError naming path; a template that fails to parse also
// names the template file and line.
func Load(confdir, path, globalPrefix string) (*Resource, error) {
	r, err := load(confdir, path, globalPrefix)
	if err != nil {
		return nil, &LoadError{Path: path, Err: err}
	}
	return r, nil
}

func load(confdir, file, globalPrefix string) (*Resource, error) {
	var doc struct {
		Template *tomlTemplate `toml:"template"`
	}
	md, err := toml.DecodeFile(file, &doc)
	if err != nil {
		return nil, err
	}
	if und := md.Undecoded(); len(und) > 0 {
		names := make([]string, len(und))
		for i, k := range und {
			names[i] = strconv.Quote(k.String())
		}
		return nil, fmt.Errorf("unknown field %s", strings.Join(names, ", "))
	}
	t := doc.Template
	if t == nil {
		return nil, errors.New("no [template] table")
	}
	if t.Src == "" {
		return nil, errors.New("src: required")
	}
	if t.Dest == "" {
		return nil, errors.New("dest: required")
	}
	r := &Resource{
		Path:      file,
		Dest:      t.Dest,
		Keys:      t.Keys,
		CheckCmd:  t.CheckCmd,
		ReloadCmd: t.ReloadCmd,
		UID:       -1,
		GID:       -1,
	}
	// confd: a non-empty global prefix replaces the resource's; a leading
	// "/" is added when missing.
	r.Prefix = t.Prefix
	if globalPrefix != "" {
		r.Prefix = globalPrefix
	}
	if !strings.HasPrefix(r.Prefix, "/") {
		r.Prefix = "/" + r.Prefix
	}
	if r.Mode, err = parseMode(t.Mode); err != nil {
		return nil, err
	}
	if r.UID, err = resolveID("uid", t.UID, "owner", t.Owner, lookupUser); err != nil {
		return nil, err
	}
	if r.GID, err = resolveID("gid", t.GID, "group", t.Group, lookupGroup); err != nil {
		return nil, err
	}
	if t.Wait != "" {
		w, err := ParseWait(t.Wait)
		if err != nil {
			return nil, fmt.Errorf("wait: %w", err)
		}
		r.Wait = &w
	}
	if g := t.Guard; g != nil && !(*g >= 0) {
		return nil, fmt.Errorf("guard_share %v: want a share between 0 and 1 (1 = off)", *g)
	}
	r.Guard = t.Guard
	for name, cmd := range map[string]string{"check_cmd": t.CheckCmd, "reload_cmd": t.ReloadCmd} {
		if _, err := template.New(name).Parse(cmd); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	src, err := filepath.Abs(filepath.Join(confdir, "templates", t.Src))
	if err != nil {
		return nil, err
	}
	r.Src = src
	text, err := os.ReadFile(src)
	if err != nil {
		return nil, fmt.Errorf("read template: %w", err)
	}
	// The template is named by its path so that every parse and execution
	// error reads "template: <path>:<line>: ...".
	// Parsing needs every function name; each render clones the template
	// and binds the names to its own store.
	if r.tmpl, err = template.New(src).Funcs(newState(nil, nil, nil).funcs()).Parse(string(text)); err != nil {
		return nil, err
	}
	r.watch = watchPrefixes(r.Prefix, r.Keys)
	r.svcDirs = serviceDirs(r.Prefix, r.Keys)
	return r, nil
}

// parseMode reads confd's mode string. confd parses it with base 0, so "644"
// would be decimal 644 (= 0o1204); that trap is refused: a mode needs its
// leading 0 ("0644", "0o644").
func parseMode(s string) (os.FileMode, error) {
	if s == "" {
		return 0, nil
	}
	m, err := strconv.ParseUint(s, 0, 32)
	switch {
	case err != nil:
		return 0, fmt.Errorf("mode %q: not a number", s)
	case !strings.HasPrefix(s, "0") && m != 0:
		return 0, fmt.Errorf("mode %q: want octal with a leading 0, e.g. \"0644\"", s)
	case m&^0o7777 != 0:
		return 0, fmt.Errorf("mode %q: not a permission mode (over 07777)", s)
	case m == 0:
		return 0, fmt.Errorf("mode %q: no permissions at all", s)
	}
	// setuid/setgid/sticky map to os.FileMode's own bits.
	fm := os.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		fm |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= os.ModeSticky
	}
	return fm, nil
}

// resolveID combines a numeric id field with a name field: either one, or
// both when they agree; -1 when neither is set.
func resolveID(idField string, id *int, nameField, name string, lookup func(string) (int, error)) (int, error) {
	n := -1
	if id != nil {
		if *id < 0 {
			return 0, fmt.Errorf("%s %d: negative", idField, *id)
		}
		n = *id
	}
	if name == "" {
		return n, nil
	}
	byName, err := lookup(name)
	if err != nil {
		return 0, fmt.Errorf("%s %q: %w", nameField, name, err)
	}
	if n >= 0 && n != byName {
		return 0, fmt.Errorf("%s %q is id %d but %s is %d", nameField, name, byName, idField, n)
	}
	return byName, nil
}

func lookupUser(name string) (int, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(u.Uid)
}

func lookupGroup(name string) (int, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(g.Gid)
}

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
