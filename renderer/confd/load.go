package confd

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"

	"github.com/BurntSushi/toml"

	"github.com/rollcall/rollcall/haproxyapi"
)

// The conf.d loader: confd's [template] table, read as confd reads it.

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
	Push      string   `toml:"push"`
	Guard     *float64 `toml:"guard_share"`
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
		Prefix:    effectivePrefix(t.Prefix, globalPrefix),
		UID:       -1,
		GID:       -1,
	}
	warn, err := r.parseOwnership(t)
	if err != nil {
		return nil, err
	}
	if warn != "" {
		warnings = append(warnings, warn)
	}
	r.Warnings = warnings
	if err := r.parseOptions(t); err != nil {
		return nil, err
	}
	if err := r.parseTemplates(confdir, t); err != nil {
		return nil, err
	}
	r.watch = watchPrefixes(r.Prefix, r.Keys)
	r.svcDirs = serviceDirs(r.Prefix, r.Keys)
	r.cache = &renderCache{}
	return r, nil
}

// effectivePrefix follows confd: a non-empty global prefix replaces the
// resource's; a leading "/" is added when missing.
func effectivePrefix(prefix, globalPrefix string) string {
	if globalPrefix != "" {
		prefix = globalPrefix
	}
	if !strings.HasPrefix(prefix, "/") {
		prefix = "/" + prefix
	}
	return prefix
}

// parseOwnership sets the dest file's mode, uid and gid; warn is a
// warning about the mode, if any.
func (r *Resource) parseOwnership(t *tomlTemplate) (warn string, err error) {
	if r.Mode, warn, err = parseMode(t.Mode); err != nil {
		return "", err
	}
	if r.UID, err = resolveID("uid", t.UID, "owner", t.Owner, lookupUser); err != nil {
		return "", err
	}
	if r.GID, err = resolveID("gid", t.GID, "group", t.Group, lookupGroup); err != nil {
		return "", err
	}
	return warn, nil
}

// parseOptions sets rollcall's own keys: wait, guard_share and push.
func (r *Resource) parseOptions(t *tomlTemplate) error {
	if t.Wait != "" {
		w, err := ParseWait(t.Wait)
		if err != nil {
			return fmt.Errorf("wait: %w", err)
		}
		r.Wait = &w
	}
	if g := t.Guard; g != nil && !(*g >= 0) {
		return fmt.Errorf("guard_share %v: want a share between 0 and 1 (1 = off)", *g)
	}
	r.Guard = t.Guard
	if t.Push != "" {
		if err := checkPushURL(t.Push); err != nil {
			return fmt.Errorf("push: %w", err)
		}
		r.Push = t.Push
	}
	return nil
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

// checkPushURL accepts only an http URL on this host: the peers endpoint
// refuses remote callers, and a push over the network would be one more
// thing to secure.
func checkPushURL(s string) error {
	if strings.HasPrefix(s, "haproxy:") {
		_, err := haproxyapi.ParsePush(s) // HAProxy's runtime API (renderer/haproxy.go)
		return err
	}
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "http" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q: want http://127.0.0.1:<port>/<path>", s)
	}
	host := u.Hostname()
	if ip, err := netip.ParseAddr(host); host != "localhost" && (err != nil || !ip.IsLoopback()) {
		return fmt.Errorf("%q: not a loopback address (the endpoint takes local callers only)", s)
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
