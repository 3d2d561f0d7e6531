package confd

import (
	"errors"
	"fmt"
	"io/fs"
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
	Mode      os.FileMode // permission bits from the mode string, as confd reads it; 0 = not set (caller keeps dest's mode or 0644)
	UID, GID  int         // -1 = not set; owner/group names resolved to ids (os/user)
	CheckCmd  string      // may use {{.src}} (the staged file)
	ReloadCmd string      // may use {{.src}} and {{.dest}}
	Wait      *Wait       // per-resource `wait = "min:max"` (rollcall extension), nil = not set
	Warnings  []string    // what loaded but deserves a word: unknown fields, a surprising mode

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
}

// Loader loads template resources for one renderer configuration.
type Loader struct {
	Prefix   string // global prefix: when set it replaces every resource's (confd)
	SyncOnly bool   // confd's -sync-only: resources load without check_cmd and reload_cmd
}

// LoadDir is Loader{Prefix: globalPrefix}.LoadDir(confdir).
func LoadDir(confdir, globalPrefix string) ([]*Resource, []*LoadError) {
	return Loader{Prefix: globalPrefix}.LoadDir(confdir)
}

// LoadDir loads every *.toml under <confdir>/conf.d, subdirectories
// included (confd walks it recursively), in lexical path order; hidden files
// and directories are left out (editors' ".#r.toml" locks, swap files).
// One bad file never stops the others. A resource whose dest another
// (earlier) resource already writes is refused: two writers of one file
// would fight.
func (l Loader) LoadDir(confdir string) ([]*Resource, []*LoadError) {
	dir := filepath.Join(confdir, "conf.d")
	if _, err := os.Stat(dir); err != nil {
		return nil, []*LoadError{{Path: dir, Err: err}}
	}
	var (
		rs    []*Resource
		errs  []*LoadError
		dests = map[string]string{}
	)
	walkErr := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil { // an unreadable subdirectory: say so, load the rest
			errs = append(errs, &LoadError{Path: p, Err: err})
			return nil
		}
		hidden := strings.HasPrefix(e.Name(), ".") && p != dir
		if e.IsDir() {
			if hidden {
				return filepath.SkipDir
			}
			return nil
		}
		if hidden || !strings.HasSuffix(e.Name(), ".toml") {
			return nil
		}
		r, err := l.Load(confdir, p)
		if err != nil {
			var le *LoadError
			if !errors.As(err, &le) {
				le = &LoadError{Path: p, Err: err}
			}
			errs = append(errs, le)
			return nil
		}
		dest := filepath.Clean(r.Dest)
		if other, ok := dests[dest]; ok {
			errs = append(errs, &LoadError{Path: p, Err: fmt.Errorf("dest %s is already written by %s", r.Dest, other)})
			return nil
		}
		dests[dest] = p
		rs = append(rs, r)
		return nil
	})
	if walkErr != nil {
		errs = append(errs, &LoadError{Path: dir, Err: walkErr})
	}
	return rs, errs
}

// Load is Loader{Prefix: globalPrefix}.Load(confdir, path).
func Load(confdir, path, globalPrefix string) (*Resource, error) {
	return Loader{Prefix: globalPrefix}.Load(confdir, path)
}

// Load loads one resource file (templates resolved against <confdir>/templates).
// Errors are *LoadError naming path; a template that fails to parse also
// names the template file and line.
func (l Loader) Load(confdir, path string) (*Resource, error) {
	r, err := load(confdir, path, l.Prefix)
	if err != nil {
		return nil, &LoadError{Path: path, Err: err}
	}
	if l.SyncOnly {
		r.CheckCmd, r.ReloadCmd = "", ""
	}
	return r, nil
}

// decode reads the [template] table; a field or table confd ignores is a
// warning, not an error.
func decode(file string) (t *tomlTemplate, warnings []string, err error) {
	var doc struct {
		Template *tomlTemplate `toml:"template"`
	}
	md, err := toml.DecodeFile(file, &doc)
	if err != nil {
		return nil, nil, err
	}
	for _, k := range md.Undecoded() {
		warnings = append(warnings, fmt.Sprintf("unknown field %q ignored (as confd ignores it)", k.String()))
	}
	switch t = doc.Template; {
	case t == nil:
		return nil, nil, errors.New("no [template] table")
	case t.Src == "":
		return nil, nil, errors.New("src: required")
	case t.Dest == "":
		return nil, nil, errors.New("dest: required")
	}
	return t, warnings, nil
}

func load(confdir, file, globalPrefix string) (*Resource, error) {
	t, warnings, err := decode(file)
	if err != nil {
		return nil, err
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
	var warn string
	if r.Mode, warn, err = parseMode(t.Mode); err != nil {
		return nil, err
	}
	if warn != "" {
		warnings = append(warnings, warn)
	}
	r.Warnings = warnings
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
	if err := r.parseTemplates(confdir, t); err != nil {
		return nil, err
	}
	r.watch = watchPrefixes(r.Prefix, r.Keys)
	r.svcDirs = serviceDirs(r.Prefix, r.Keys)
	return r, nil
}

// parseTemplates parses check_cmd and reload_cmd (so a broken one is
// reported at load, not at the first change) and the template itself.
func (r *Resource) parseTemplates(confdir string, t *tomlTemplate) error {
	for name, cmd := range map[string]string{"check_cmd": t.CheckCmd, "reload_cmd": t.ReloadCmd} {
		if _, err := template.New(name).Parse(cmd); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	src, err := filepath.Abs(filepath.Join(confdir, "templates", t.Src))
	if err != nil {
		return err
	}
	r.Src = src
	text, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("read template: %w", err)
	}
	// The template is named by its path so that every parse and execution
	// error reads "template: <path>:<line>: ...".
	// Parsing needs every function name; each render clones the template
	// and binds the names to its own store.
	if r.tmpl, err = template.New(src).Funcs(newState(nil, nil, nil).funcs()).Parse(string(text)); err != nil {
		return err
	}
	return nil
}

// parseMode reads mode as confd does: strconv.ParseUint(mode, 0, 32), so
// "0644" and "0o644" are octal but "644" is decimal 644 (= 0o1204), and the
// file gets what os.Chmod makes of os.FileMode(n): the permission bits
// (0o204 here; "420" gives 0o644). Bits beyond those are dropped, as by
// confd. A decimal mode, or one that loses bits, loads with a warning; a
// mode that leaves no permission bit at all is refused (confd would install
// the file with mode 0000).
func parseMode(s string) (mode os.FileMode, warning string, err error) {
	if s == "" {
		return 0, "", nil
	}
	m, err := strconv.ParseUint(s, 0, 32)
	if err != nil {
		return 0, "", fmt.Errorf("mode %q: not a number (confd reads it with strconv.ParseUint base 0)", s)
	}
	perm := os.FileMode(m) & os.ModePerm
	if perm == 0 {
		return 0, "", fmt.Errorf("mode %q: no permission bits (the file would be mode 0000)", s)
	}
	var why []string
	decimal := !strings.HasPrefix(s, "0")
	if decimal {
		why = append(why, fmt.Sprintf("decimal %d is %#o", m, m))
	}
	if uint64(perm) != m {
		why = append(why, "only its permission bits are kept")
	}
	if len(why) > 0 {
		warning = fmt.Sprintf("mode %q: %s, so the file gets mode %#o, as with confd", s, strings.Join(why, "; "), uint64(perm))
		if decimal && strings.Trim(s, "01234567") == "" {
			warning += fmt.Sprintf(` (write "0%s" for octal %s)`, s, s)
		}
	}
	return perm, warning, nil
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
	slices.Sort(ps)
	ps = slices.Compact(ps)
	out := ps[:0]
	for _, p := range ps {
		if !slices.ContainsFunc(ps, func(q string) bool { return q != p && registry.Covers(q, p) }) {
			out = append(out, p)
		}
	}
	return out
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
