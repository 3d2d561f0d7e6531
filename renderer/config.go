package renderer

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rollcall/rollcall/cli"
	"github.com/rollcall/rollcall/registry"
	"github.com/rollcall/rollcall/renderer/confd"
)

// Defaults.
const (
	DefaultConfDir        = "/etc/rollcall"
	ConfdConfDir          = "/etc/confd" // the default for a confd command line
	DefaultEndpoint       = "127.0.0.1:2379"
	DefaultEmbedListen    = "127.0.0.1:2379"
	DefaultCooldown       = time.Second // the reload budget's refill: one apply per cooldown
	DefaultReloadBurst    = 2           // applies the reload budget allows at once
	DefaultCommandTimeout = 30 * time.Second
	DefaultAckTTL         = 10 * time.Second
	DefaultNginxPID       = "/run/nginx.pid"           // Debian's nginx
	DefaultNginxErrorLog  = "/var/log/nginx/error.log" // Debian's nginx
)

// Config is everything Run needs. Build it with ParseArgs (flags, env and the
// config file) or by hand; Validate fills defaults and checks it.
type Config struct {
	ConfDir        string        // holds conf.d/ (searched recursively, as confd) and templates/
	ConfigFile     string        // renderer.toml / confd.toml; "" = <ConfDir>/renderer.toml, else <ConfDir>/confd.toml, if present
	Endpoints      []string      // etcd client endpoints
	Prefix         string        // global key prefix, replaces every resource's prefix (confd)
	Onetime        bool          // one list, one apply, return
	Noop           bool          // render and check, print diffs, install nothing
	SyncOnly       bool          // confd's -sync-only: install files, run no check_cmd and no reload_cmd
	Wait           *confd.Wait   // nil = apply at once within the reload budget; else trailing quiescence
	Cooldown       time.Duration // reload budget: one apply per Cooldown once the burst is spent; 0 = no budget
	ReloadBurst    int           // reload budget: applies allowed at once; 0 = DefaultReloadBurst
	Interval       time.Duration // optional safety re-list; 0 = never
	EmbedEtcd      string        // data dir of an in-process etcd; "" = none
	EmbedListen    string        // client address of the in-process etcd
	MetricsAddr    string        // serve /metrics /healthz /readyz; "" = off
	ID             string        // renderer id for acknowledgements; default hostname
	LogLevel       string        // debug, info, warn, error (confd's panic and fatal mean error)
	CACert         string        // TLS: CA bundle
	Cert, Key      string        // TLS: client certificate and key
	User, Password string        // etcd auth
	CommandTimeout time.Duration // limit for every check_cmd / reload_cmd
	AckTTL         time.Duration // lease TTL of the _renderers/<id> key
	LaxValues      bool          // strict_values = false: instance keys with invalid values reach templates
	NginxPID       string        // the nginx master's pid file, to confirm plain nginx reloads; "" = Debian's
	NginxErrorLog  string        // nginx's error log: [emerg] lines explain a refused reload; "" = Debian's
	NginxConfirm   string        // which reload_cmds the renderer confirms: auto (default), all, none
	Push           string        // resources with push: auto (push when nginx's Lua module is found, default), on, off (reload path)
	GuardShare     float64       // hold a render removing more than this share of a resource's instances; 0 = DefaultGuardShare, >= 1 = off
	GuardGrace     time.Duration // apply a held render once its view held this long; 0 = DefaultGuardGrace

	// SRVRecord, when set, names the DNS SRV record listing the etcd
	// members (confd's -srv-domain / -srv-record); ResolveSRV replaces
	// Endpoints with them, and SRVScheme ("" or "http"/"https") goes in
	// front of each, as confd does for its etcd backend.
	SRVRecord, SRVScheme string

	PrintVersion bool     // -version: print the version and exit; nothing else was read
	Warnings     []string // settings accepted that deserve a word in the log (cmd/ logs them)

	Stdout io.Writer        // where --noop prints diffs; nil = os.Stdout
	Reload <-chan os.Signal // SIGHUP relayed by cmd/: reload resources as on a file change
}

// flags is the parsed command line before the environment and file merge in.
type flags struct {
	fs        *flag.FlagSet
	set       map[string]bool // rollcall's names of the flags given
	endpoints listValue
	wait      string
	backend   string
	srvDomain string
	srvRecord string
	scheme    string
	strict    bool // --strict-values
	// configMust: the file was named by --config (it must exist), not by
	// confd's -config-file (a missing one is skipped, as confd does).
	configMust bool
}

// ParseArgs builds a Config from command-line args (without the program
// name), the environment (getenv) and the config file. It reads rollcall's
// flags and confd v0.16's (single or double dash). Precedence: flags, then
// environment, then the file, then defaults. Errors are *UsageError.
func ParseArgs(args []string, getenv func(string) string) (Config, error) {
	var c Config
	f, err := c.parseFlags(args)
	if err != nil || c.PrintVersion {
		return c, err
	}
	if err := f.refuseOthers(); err != nil {
		return c, err
	}
	c.mergeEnv(f.set, getenv)
	fc, err := c.mergeFile(f.set, f.configMust)
	if err != nil {
		return c, err
	}
	for _, v := range []struct {
		dst         *string
		flag, fileV string
	}{{&f.backend, "backend", fc.Backend}, {&f.srvDomain, "srv-domain", fc.SRVDomain},
		{&f.srvRecord, "srv-record", fc.SRVRecord}, {&f.scheme, "scheme", fc.Scheme}} {
		if !f.set[v.flag] && v.fileV != "" {
			*v.dst = v.fileV
		}
	}
	if err := c.setBackend(f.backend, f.srvDomain, f.srvRecord, f.scheme); err != nil {
		return c, err
	}
	if len(c.Endpoints) == 0 {
		c.Endpoints = []string{DefaultEndpoint}
	}
	return c, c.Validate()
}

// defineFlags defines rollcall's flags and confd's on f.fs, writing into c
// and f.
func (c *Config) defineFlags(f *flags) {
	fs := f.fs
	both := func(p *string, name, confdName, usage string) {
		fs.StringVar(p, name, "", usage)
		fs.StringVar(p, confdName, "", "confd's name for -"+name)
	}
	fs.StringVar(&c.ConfDir, "confdir", DefaultConfDir, "directory holding conf.d/ and templates/")
	both(&c.ConfigFile, "config", "config-file", "config file (default <confdir>/renderer.toml, else <confdir>/confd.toml); -config-file may be missing, as in confd")
	fs.Var(&f.endpoints, "endpoints", "etcd endpoints, comma-separated (env ETCD_ENDPOINTS)")
	fs.Var(&f.endpoints, "node", "confd: an etcd node (repeatable; a comma-separated list works too)")
	fs.StringVar(&c.Prefix, "prefix", "", "key prefix; when set it replaces every resource's prefix (confd's rule)")
	fs.BoolVar(&c.Onetime, "onetime", false, "render once and exit; non-zero if any resource failed")
	fs.BoolVar(&c.Noop, "noop", false, "render and check, print a unified diff, install nothing")
	fs.BoolVar(&c.SyncOnly, "sync-only", false, "confd: install files without running check_cmd or reload_cmd")
	fs.StringVar(&f.wait, "wait", "", "min:max trailing quiescence (off: apply at once, throttle only a sustained stream)")
	fs.DurationVar(&c.Cooldown, "cooldown", DefaultCooldown, "reload budget: one apply per cooldown once --reload-burst applies are spent; full again after a cooldown without changes (0 = no budget)")
	fs.IntVar(&c.ReloadBurst, "reload-burst", DefaultReloadBurst, "reload budget: applies allowed at once")
	fs.Var((*intervalValue)(&c.Interval), "interval", "safety re-list interval: seconds (confd) or a duration; 0 = off")
	fs.StringVar(&c.EmbedEtcd, "embed-etcd", "", "run an in-process etcd with its data in DIR")
	fs.StringVar(&c.EmbedListen, "embed-listen", DefaultEmbedListen, "client address of the in-process etcd")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "", "serve /metrics, /healthz, /readyz on this address")
	fs.StringVar(&c.ID, "id", "", "renderer id for acknowledgements (default hostname)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	both(&c.CACert, "cacert", "client-ca-keys", "etcd TLS CA bundle (env CONFD_CLIENT_CAKEYS)")
	both(&c.Cert, "cert", "client-cert", "etcd TLS client certificate (env CONFD_CLIENT_CERT)")
	both(&c.Key, "key", "client-key", "etcd TLS client key (env CONFD_CLIENT_KEY)")
	both(&c.User, "user", "username", "etcd user")
	fs.StringVar(&c.Password, "password", "", "etcd password (better: env ETCD_PASSWORD, which ps does not show)")
	fs.DurationVar(&c.CommandTimeout, "command-timeout", DefaultCommandTimeout, "timeout of every check_cmd and reload_cmd")
	fs.BoolVar(&f.strict, "strict-values", true, "withhold instance keys whose value is not the ip:port the key names from every template function")
	fs.StringVar(&c.NginxPID, "nginx-pid", DefaultNginxPID, "nginx master's pid file: the renderer confirms reload_cmds that do not confirm themselves")
	fs.StringVar(&c.NginxErrorLog, "nginx-error-log", DefaultNginxErrorLog, "nginx error log: its [emerg] lines say why nginx refused a reload")
	fs.StringVar(&c.NginxConfirm, "nginx-confirm", ConfirmAuto, "which reload_cmds the renderer confirms as nginx reloads: auto, all or none")
	fs.Float64Var(&c.GuardShare, "guard-share", DefaultGuardShare, "hold a render that removes more than this share of a resource's instances at once (1 = off)")
	fs.DurationVar(&c.GuardGrace, "guard-grace", DefaultGuardGrace, "apply a held render once the same view held this long (or on SIGHUP)")
	fs.StringVar(&c.Push, "push", PushAuto, "resources with push = URL: auto (push when nginx's Lua module is installed), on, or off (render, check and reload instead)")
	fs.StringVar(&f.backend, "backend", "", "confd: etcd or etcdv3 (both mean etcd's v3 API)")
	fs.StringVar(&f.srvDomain, "srv-domain", "", "confd: find etcd through the SRV record _<backend>._tcp.<domain>.")
	fs.StringVar(&f.srvRecord, "srv-record", "", "confd: find etcd through this SRV record")
	fs.StringVar(&f.scheme, "scheme", "", "confd: http or https, for nodes found through SRV with -backend etcd")
	fs.BoolVar(&c.PrintVersion, "version", false, "print the version and exit")
	fs.Bool("watch", false, "confd: accepted; the renderer always watches")
	fs.Bool("basic-auth", false, "confd: accepted; -username/-password are always used")
	fs.Bool("keep-stage-file", false, "confd: accepted; staged files are always removed")
	for name, backend := range otherBackends {
		fs.String(name, "", "confd's "+backend+" backend: refused")
	}
	fs.String("secret-keyring", "", "confd: refused ("+unsupported["secret-keyring"]+")")
	fs.Bool("client-insecure", false, "confd: refused ("+unsupported["client-insecure"]+")")
}

// parseFlags defines and parses every flag into c.
func (c *Config) parseFlags(args []string) (*flags, error) {
	f := &flags{fs: flag.NewFlagSet("renderer", flag.ContinueOnError), set: map[string]bool{}}
	fs := f.fs
	fs.SetOutput(io.Discard)
	c.defineFlags(f)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return f, &cli.UsageError{Err: fmt.Errorf("usage: renderer [flags]\n%s", f.help())}
		}
		// flag quotes a bad flag's name as given: keep the message one line.
		return f, &cli.UsageError{Err: errors.New(strings.ReplaceAll(err.Error(), "\n", `\n`))}
	}
	if fs.NArg() > 0 {
		return f, cli.Usagef("unexpected argument %q", fs.Arg(0))
	}
	confdLine := false
	fs.Visit(func(fl *flag.Flag) {
		f.configMust = f.configMust || fl.Name == "config"
		confdLine = confdLine || confdOnly[fl.Name]
		name := fl.Name
		if a, ok := confdAliases[name]; ok {
			name = a
		}
		f.set[name] = true
	})
	// A confd command line that relies on confd's default confdir (and so
	// on /etc/confd/confd.toml) keeps it: swapping the binary name is all
	// a supervisor program needs.
	if confdLine && !f.set["confdir"] {
		c.ConfDir = ConfdConfDir
	}
	if f.set["keep-stage-file"] && fs.Lookup("keep-stage-file").Value.String() == "true" {
		c.Warnings = append(c.Warnings, "-keep-stage-file: accepted, but staged files are removed (a failed check logs its output)")
	}
	c.LaxValues = !f.strict
	if f.set["endpoints"] {
		c.Endpoints = f.endpoints.list
	}
	if f.set["wait"] {
		w, err := confd.ParseWait(f.wait)
		if err != nil {
			return f, cli.Usagef("--wait %q: %v", f.wait, err)
		}
		c.Wait = &w
	}
	return f, nil
}

// help lists the flags the renderer accepts, then the confd flags it
// refuses, by name.
func (f *flags) help() string {
	var all strings.Builder
	f.fs.SetOutput(&all)
	f.fs.PrintDefaults()
	f.fs.SetOutput(io.Discard)
	var b strings.Builder
	keep := true
	for line := range strings.Lines(all.String()) {
		if name, ok := strings.CutPrefix(line, "  -"); ok { // a flag's first line
			name, _, _ = strings.Cut(strings.TrimSpace(name), " ")
			keep = otherBackends[name] == "" && unsupported[name] == ""
		}
		if keep {
			b.WriteString(line)
		}
	}
	refused := append(slices.Sorted(maps.Keys(otherBackends)), slices.Sorted(maps.Keys(unsupported))...)
	b.WriteString("Refused (confd's other backends, and unsupported): -" + strings.Join(refused, " -") + "\n")
	return b.String()
}

// mergeEnv fills what no flag set from the environment.
func (c *Config) mergeEnv(set map[string]bool, getenv func(string) string) {
	if e := getenv("ETCD_ENDPOINTS"); e != "" && !set["endpoints"] {
		c.Endpoints, set["endpoints"] = splitList(e), true
	}
	if p := getenv("ETCD_PASSWORD"); p != "" && !set["password"] {
		c.Password, set["password"] = p, true
	}
	for _, e := range []struct {
		name, env string
		dst       *string
	}{{"cacert", "CONFD_CLIENT_CAKEYS", &c.CACert}, {"cert", "CONFD_CLIENT_CERT", &c.Cert}, {"key", "CONFD_CLIENT_KEY", &c.Key}} {
		if v := getenv(e.env); v != "" && !set[e.name] {
			*e.dst, set[e.name] = v, true
		}
	}
}

// fillDefaults sets the zero settings that have a default.
func (c *Config) fillDefaults() {
	for _, d := range []struct {
		dst *string
		def string
	}{
		{&c.ConfDir, DefaultConfDir}, {&c.EmbedListen, DefaultEmbedListen}, {&c.NginxPID, DefaultNginxPID},
		{&c.NginxErrorLog, DefaultNginxErrorLog}, {&c.NginxConfirm, ConfirmAuto}, {&c.Push, PushAuto},
	} {
		if *d.dst == "" {
			*d.dst = d.def
		}
	}
	if c.ReloadBurst == 0 {
		c.ReloadBurst = DefaultReloadBurst
	}
	if c.CommandTimeout == 0 {
		c.CommandTimeout = DefaultCommandTimeout
	}
	if c.AckTTL == 0 {
		c.AckTTL = DefaultAckTTL
	}
}

// Validate fills defaults and checks the config; errors are *UsageError.
func (c *Config) Validate() error {
	c.fillDefaults()
	if c.ID == "" {
		h, err := os.Hostname()
		if err != nil {
			return cli.Usagef("--id: no hostname: %v", err)
		}
		c.ID = h
	}
	c.Prefix = registry.CleanPrefix(c.Prefix)
	switch {
	case len(c.Endpoints) == 0 && c.EmbedEtcd == "" && c.SRVRecord == "":
		return cli.Usagef("no etcd endpoints")
	case c.Cooldown < 0:
		return cli.Usagef("--cooldown %v: negative", c.Cooldown)
	case c.ReloadBurst < 0:
		return cli.Usagef("--reload-burst %d: negative", c.ReloadBurst)
	case c.Interval < 0:
		return cli.Usagef("--interval %v: negative", c.Interval)
	case c.CommandTimeout < 0:
		return cli.Usagef("--command-timeout %v: negative", c.CommandTimeout)
	case c.GuardShare < 0 || c.GuardShare != c.GuardShare:
		return cli.Usagef("--guard-share %v: want a share between 0 and 1 (1 = off)", c.GuardShare)
	case c.GuardGrace < 0:
		return cli.Usagef("--guard-grace %v: negative", c.GuardGrace)
	case c.AckTTL < 2*time.Second:
		return cli.Usagef("ack TTL %v: etcd's floor is 2s", c.AckTTL)
	case strings.ContainsAny(c.ID, "/ \t\n") || c.ID == "." || c.ID == "..":
		return cli.Usagef("--id %q: must be one key segment", c.ID)
	case (c.Cert == "") != (c.Key == ""):
		return cli.Usagef("--cert and --key (-client-cert and -client-key) go together")
	case c.NginxConfirm != ConfirmAuto && c.NginxConfirm != ConfirmAll && c.NginxConfirm != ConfirmNone:
		return cli.Usagef("--nginx-confirm %q: want auto, all or none", c.NginxConfirm)
	case c.Push != PushAuto && c.Push != PushOn && c.Push != PushOff:
		return cli.Usagef("--push %q: want auto, on or off", c.Push)
	}
	for _, e := range c.Endpoints {
		if err := checkEndpoint(e); err != nil {
			return cli.Usagef("etcd endpoint %q: %v", e, err)
		}
	}
	if c.Wait != nil && (c.Wait.Min < 0 || c.Wait.Max < c.Wait.Min) {
		return cli.Usagef("--wait %v:%v: want 0 <= min <= max", c.Wait.Min, c.Wait.Max)
	}
	if _, err := cli.ParseLevel(c.LogLevel); err != nil {
		return cli.Usagef("--log-level: %v", err)
	}
	return nil
}

// checkEndpoint catches what clientv3 would only report as a dial failure:
// a scheme it does not know, an empty address, spaces.
func checkEndpoint(e string) error {
	if scheme, rest, ok := strings.Cut(e, "://"); ok {
		switch scheme {
		case "http", "https", "unix", "unixs":
		default:
			return fmt.Errorf("scheme %q: want http:// or https://", scheme)
		}
		e = rest
	}
	if e == "" || strings.ContainsAny(e, " \t") {
		return errors.New("want host:port or http(s)://host:port")
	}
	return nil
}

// listValue is a repeatable flag of comma-separated items (confd's -node
// repeats, rollcall's --endpoints takes a list; both work either way). The
// first Set replaces the default.
type listValue struct{ list []string }

func (l *listValue) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(l.list, ",")
}

func (l *listValue) Set(s string) error {
	items := splitList(s)
	if len(items) == 0 {
		return errors.New("empty")
	}
	l.list = append(l.list, items...)
	return nil
}

// intervalValue reads confd's whole seconds ("60") or a Go duration ("1m").
type intervalValue time.Duration

func (v *intervalValue) String() string {
	if v == nil {
		return "0s"
	}
	return time.Duration(*v).String()
}

func (v *intervalValue) Set(s string) error {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n > int64(time.Duration(1<<63-1)/time.Second) {
			return errors.New("too large")
		}
		*v = intervalValue(time.Duration(n) * time.Second)
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("want seconds (60) or a duration (1m)")
	}
	*v = intervalValue(d)
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
