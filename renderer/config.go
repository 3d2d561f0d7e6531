package renderer

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/rollcall/rollcall/registry"
	"github.com/rollcall/rollcall/renderer/confd"
)

// Defaults.
const (
	DefaultConfDir        = "/etc/rollcall"
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
	ConfDir        string        // holds conf.d/*.toml and templates/
	ConfigFile     string        // renderer.toml / confd.toml; "" = <ConfDir>/renderer.toml if present
	Endpoints      []string      // etcd client endpoints
	Prefix         string        // global key prefix, replaces every resource's prefix (confd)
	Onetime        bool          // one list, one apply, return
	Noop           bool          // render and check, print diffs, install nothing
	Wait           *confd.Wait   // nil = apply at once within the reload budget; else trailing quiescence
	Cooldown       time.Duration // reload budget: one apply per Cooldown once the burst is spent; 0 = no budget
	ReloadBurst    int           // reload budget: applies allowed at once; 0 = DefaultReloadBurst
	Interval       time.Duration // optional safety re-list; 0 = never
	EmbedEtcd      string        // data dir of an in-process etcd; "" = none
	EmbedListen    string        // client address of the in-process etcd
	MetricsAddr    string        // serve /metrics /healthz /readyz; "" = off
	ID             string        // renderer id for acknowledgements; default hostname
	LogLevel       string        // debug, info, warn, error
	CACert         string        // TLS: CA bundle
	Cert, Key      string        // TLS: client certificate and key
	User, Password string        // etcd auth
	CommandTimeout time.Duration // limit for every check_cmd / reload_cmd
	AckTTL         time.Duration // lease TTL of the _renderers/<id> key
	LaxValues      bool          // strict_values = false: instance keys with invalid values reach templates
	NginxPID       string        // the nginx master's pid file, to confirm plain nginx reloads; "" = Debian's
	NginxErrorLog  string        // nginx's error log: [emerg] lines explain a refused reload; "" = Debian's
	NginxConfirm   string        // which reload_cmds the renderer confirms: auto (default), all, none
	GuardShare     float64       // hold a render removing more than this share of a resource's instances; 0 = DefaultGuardShare, >= 1 = off
	GuardGrace     time.Duration // apply a held render once its view held this long; 0 = DefaultGuardGrace

	Stdout io.Writer        // where --noop prints diffs; nil = os.Stdout
	Reload <-chan os.Signal // SIGHUP relayed by cmd/: reload resources as on a file change
}

// UsageError is a bad flag, environment variable or config file; the
// command exits 2 on it.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

func usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// fileConfig is renderer.toml: confd.toml's keys plus rollcall's own.
// Unknown keys are rejected.
type fileConfig struct {
	// confd.toml keys that mean something here.
	Backend      string   `toml:"backend"`
	ConfDir      string   `toml:"confdir"`
	Nodes        []string `toml:"nodes"`
	Prefix       string   `toml:"prefix"`
	Interval     *int     `toml:"interval"` // seconds
	Watch        *bool    `toml:"watch"`    // accepted; rollcall always watches
	ClientCert   string   `toml:"client_cert"`
	ClientKey    string   `toml:"client_key"`
	ClientCAKeys string   `toml:"client_cakeys"`
	Username     string   `toml:"username"`
	Password     string   `toml:"password"`
	LogLevel     string   `toml:"log-level"`
	Noop         *bool    `toml:"noop"`
	Onetime      *bool    `toml:"onetime"`
	Scheme       string   `toml:"scheme"` // "http" or "https" for nodes without one
	BasicAuth    *bool    `toml:"basic_auth"`
	SyncOnly     *bool    `toml:"sync-only"`
	SRVDomain    string   `toml:"srv_domain"`
	SRVRecord    string   `toml:"srv_record"`

	// rollcall keys.
	Endpoints      []string `toml:"endpoints"`
	Wait           string   `toml:"wait"`
	Cooldown       string   `toml:"cooldown"`
	ReloadBurst    *int     `toml:"reload_burst"`
	EmbedEtcd      string   `toml:"embed_etcd"`
	EmbedListen    string   `toml:"embed_listen"`
	MetricsAddr    string   `toml:"metrics_addr"`
	ID             string   `toml:"id"`
	CommandTimeout string   `toml:"command_timeout"`
	StrictValues   *bool    `toml:"strict_values"`
	NginxPID       string   `toml:"nginx_pid"`
	NginxErrorLog  string   `toml:"nginx_error_log"`
	NginxConfirm   string   `toml:"nginx_confirm"`
	GuardShare     *float64 `toml:"guard_share"`
	GuardGrace     string   `toml:"guard_grace"`
}

// ParseArgs builds a Config from command-line args (without the program
// name), the environment (getenv) and the config file. Precedence: flags,
// then environment, then the file, then defaults. Errors are *UsageError.
func ParseArgs(args []string, getenv func(string) string) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("renderer", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var endpoints, wait string
	fs.StringVar(&c.ConfDir, "confdir", DefaultConfDir, "directory holding conf.d/ and templates/")
	fs.StringVar(&c.ConfigFile, "config", "", "config file (default <confdir>/renderer.toml)")
	fs.StringVar(&endpoints, "endpoints", DefaultEndpoint, "etcd endpoints, comma-separated (env ETCD_ENDPOINTS)")
	fs.StringVar(&c.Prefix, "prefix", "", "key prefix; when set it replaces every resource's prefix (confd's rule)")
	fs.BoolVar(&c.Onetime, "onetime", false, "render once and exit; non-zero if any resource failed")
	fs.BoolVar(&c.Noop, "noop", false, "render and check, print a unified diff, install nothing")
	fs.StringVar(&wait, "wait", "", "min:max trailing quiescence (off: apply at once, throttle only a sustained stream)")
	fs.DurationVar(&c.Cooldown, "cooldown", DefaultCooldown, "reload budget: one apply per cooldown once --reload-burst applies are spent; full again after a cooldown without changes (0 = no budget)")
	fs.IntVar(&c.ReloadBurst, "reload-burst", DefaultReloadBurst, "reload budget: applies allowed at once")
	fs.DurationVar(&c.Interval, "interval", 0, "optional safety re-list interval (0 = off)")
	fs.StringVar(&c.EmbedEtcd, "embed-etcd", "", "run an in-process etcd with its data in DIR")
	fs.StringVar(&c.EmbedListen, "embed-listen", DefaultEmbedListen, "client address of the in-process etcd")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "", "serve /metrics, /healthz, /readyz on this address")
	fs.StringVar(&c.ID, "id", "", "renderer id for acknowledgements (default hostname)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.CACert, "cacert", "", "etcd TLS CA bundle")
	fs.StringVar(&c.Cert, "cert", "", "etcd TLS client certificate")
	fs.StringVar(&c.Key, "key", "", "etcd TLS client key")
	fs.StringVar(&c.User, "user", "", "etcd user (password from ETCD_PASSWORD)")
	fs.DurationVar(&c.CommandTimeout, "command-timeout", DefaultCommandTimeout, "timeout of every check_cmd and reload_cmd")
	strict := fs.Bool("strict-values", true, "withhold instance keys whose value is not the ip:port the key names from every template function")
	fs.StringVar(&c.NginxPID, "nginx-pid", DefaultNginxPID, "nginx master's pid file: the renderer confirms reload_cmds that do not confirm themselves")
	fs.StringVar(&c.NginxErrorLog, "nginx-error-log", DefaultNginxErrorLog, "nginx error log: its [emerg] lines say why nginx refused a reload")
	fs.StringVar(&c.NginxConfirm, "nginx-confirm", ConfirmAuto, "which reload_cmds the renderer confirms as nginx reloads: auto, all or none")
	fs.Float64Var(&c.GuardShare, "guard-share", DefaultGuardShare, "hold a render that removes more than this share of a resource's instances at once (1 = off)")
	fs.DurationVar(&c.GuardGrace, "guard-grace", DefaultGuardGrace, "apply a held render once the same view held this long (or on SIGHUP)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			var b strings.Builder
			fs.SetOutput(&b)
			fs.PrintDefaults()
			return c, &UsageError{Err: fmt.Errorf("usage: renderer [flags]\n%s", b.String())}
		}
		return c, &UsageError{Err: err}
	}
	if fs.NArg() > 0 {
		return c, usagef("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	c.LaxValues = !*strict

	c.Password = getenv("ETCD_PASSWORD")
	if e := getenv("ETCD_ENDPOINTS"); e != "" && !set["endpoints"] {
		endpoints, set["endpoints"] = e, true
	}
	if set["endpoints"] {
		c.Endpoints = splitList(endpoints)
	}
	if set["wait"] {
		w, err := confd.ParseWait(wait)
		if err != nil {
			return c, usagef("--wait %q: %v", wait, err)
		}
		c.Wait = &w
	}

	path, must := c.ConfigFile, true
	if path == "" {
		path, must = filepath.Join(c.ConfDir, "renderer.toml"), false
	}
	if err := c.mergeFile(path, must, set); err != nil {
		return c, err
	}
	if len(c.Endpoints) == 0 {
		c.Endpoints = []string{DefaultEndpoint}
	}
	return c, c.Validate()
}

// mergeFile reads the config file and fills what no flag set.
func (c *Config) mergeFile(path string, must bool, set map[string]bool) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !must {
		return nil
	}
	if err != nil {
		return usagef("config: %v", err)
	}
	f, err := parseFile(path, data)
	if err != nil {
		return err
	}
	str := func(flagName string, dst *string, v string) {
		if !set[flagName] && v != "" {
			*dst = v
		}
	}
	if !set["confdir"] && f.ConfDir != "" && c.ConfigFile != "" {
		c.ConfDir = f.ConfDir
	}
	str("prefix", &c.Prefix, f.Prefix)
	str("cacert", &c.CACert, f.ClientCAKeys)
	str("cert", &c.Cert, f.ClientCert)
	str("key", &c.Key, f.ClientKey)
	str("user", &c.User, f.Username)
	str("log-level", &c.LogLevel, f.LogLevel)
	str("embed-etcd", &c.EmbedEtcd, f.EmbedEtcd)
	str("embed-listen", &c.EmbedListen, f.EmbedListen)
	str("metrics-addr", &c.MetricsAddr, f.MetricsAddr)
	str("id", &c.ID, f.ID)
	str("nginx-pid", &c.NginxPID, f.NginxPID)
	str("nginx-error-log", &c.NginxErrorLog, f.NginxErrorLog)
	str("nginx-confirm", &c.NginxConfirm, f.NginxConfirm)
	if !set["guard-share"] && f.GuardShare != nil {
		c.GuardShare = *f.GuardShare
	}
	if !set["strict-values"] && f.StrictValues != nil {
		c.LaxValues = !*f.StrictValues
	}
	if c.Password == "" {
		c.Password = f.Password
	}
	if !set["endpoints"] {
		nodes := append(append([]string{}, f.Endpoints...), f.Nodes...)
		for i, n := range nodes {
			if f.Scheme != "" && !strings.Contains(n, "://") {
				nodes[i] = f.Scheme + "://" + n
			}
		}
		if len(nodes) > 0 {
			c.Endpoints = nodes
		}
	}
	if !set["interval"] && f.Interval != nil {
		if *f.Interval < 0 {
			return usagef("config %s: interval %d: negative", path, *f.Interval)
		}
		c.Interval = time.Duration(*f.Interval) * time.Second
	}
	if !set["onetime"] && f.Onetime != nil {
		c.Onetime = *f.Onetime
	}
	if !set["reload-burst"] && f.ReloadBurst != nil {
		c.ReloadBurst = *f.ReloadBurst
	}
	if !set["noop"] && f.Noop != nil {
		c.Noop = *f.Noop
	}
	if !set["wait"] && f.Wait != "" {
		w, err := confd.ParseWait(f.Wait)
		if err != nil {
			return usagef("config %s: wait %q: %v", path, f.Wait, err)
		}
		c.Wait = &w
	}
	for _, d := range []struct {
		flag, key, v string
		dst          *time.Duration
	}{
		{"cooldown", "cooldown", f.Cooldown, &c.Cooldown},
		{"command-timeout", "command_timeout", f.CommandTimeout, &c.CommandTimeout},
		{"guard-grace", "guard_grace", f.GuardGrace, &c.GuardGrace},
	} {
		if set[d.flag] || d.v == "" {
			continue
		}
		v, err := time.ParseDuration(d.v)
		if err != nil {
			return usagef("config %s: %s %q: %v", path, d.key, d.v, err)
		}
		*d.dst = v
	}
	return nil
}

// parseFile decodes the config file strictly.
func parseFile(path string, data []byte) (fileConfig, error) {
	var f fileConfig
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&f)
	if err != nil {
		return f, usagef("config %s: %v", path, err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		keys := make([]string, len(u))
		for i, k := range u {
			keys[i] = k.String()
		}
		return f, usagef("config %s: unknown key(s) %s", path, strings.Join(keys, ", "))
	}
	switch f.Backend {
	case "", "etcd", "etcdv3":
	default:
		return f, usagef("config %s: backend %q not supported: rollcall reads etcd (v3 API) only", path, f.Backend)
	}
	switch f.Scheme {
	case "", "http", "https":
	default:
		return f, usagef("config %s: scheme %q: want http or https", path, f.Scheme)
	}
	if f.SRVDomain != "" || f.SRVRecord != "" {
		return f, usagef("config %s: srv_domain/srv_record not supported: list nodes", path)
	}
	if f.SyncOnly != nil && *f.SyncOnly {
		return f, usagef("config %s: sync-only not supported: rollcall always checks and reloads", path)
	}
	return f, nil
}

// Validate fills defaults and checks the config; errors are *UsageError.
func (c *Config) Validate() error {
	if c.ConfDir == "" {
		c.ConfDir = DefaultConfDir
	}
	if c.EmbedListen == "" {
		c.EmbedListen = DefaultEmbedListen
	}
	if c.CommandTimeout == 0 {
		c.CommandTimeout = DefaultCommandTimeout
	}
	if c.ReloadBurst == 0 {
		c.ReloadBurst = DefaultReloadBurst
	}
	if c.AckTTL == 0 {
		c.AckTTL = DefaultAckTTL
	}
	if c.NginxPID == "" {
		c.NginxPID = DefaultNginxPID
	}
	if c.NginxErrorLog == "" {
		c.NginxErrorLog = DefaultNginxErrorLog
	}
	if c.NginxConfirm == "" {
		c.NginxConfirm = ConfirmAuto
	}
	if c.ID == "" {
		h, err := os.Hostname()
		if err != nil {
			return usagef("--id: no hostname: %v", err)
		}
		c.ID = h
	}
	c.Prefix = registry.CleanPrefix(c.Prefix)
	switch {
	case len(c.Endpoints) == 0 && c.EmbedEtcd == "":
		return usagef("no etcd endpoints")
	case c.Cooldown < 0:
		return usagef("--cooldown %v: negative", c.Cooldown)
	case c.ReloadBurst < 0:
		return usagef("--reload-burst %d: negative", c.ReloadBurst)
	case c.Interval < 0:
		return usagef("--interval %v: negative", c.Interval)
	case c.CommandTimeout < 0:
		return usagef("--command-timeout %v: negative", c.CommandTimeout)
	case c.GuardShare < 0 || c.GuardShare != c.GuardShare:
		return usagef("--guard-share %v: want a share between 0 and 1 (1 = off)", c.GuardShare)
	case c.GuardGrace < 0:
		return usagef("--guard-grace %v: negative", c.GuardGrace)
	case c.AckTTL < 2*time.Second:
		return usagef("ack TTL %v: etcd's floor is 2s", c.AckTTL)
	case strings.ContainsAny(c.ID, "/ \t\n") || c.ID == "." || c.ID == "..":
		return usagef("--id %q: must be one key segment", c.ID)
	case (c.Cert == "") != (c.Key == ""):
		return usagef("--cert and --key go together")
	case c.NginxConfirm != ConfirmAuto && c.NginxConfirm != ConfirmAll && c.NginxConfirm != ConfirmNone:
		return usagef("--nginx-confirm %q: want auto, all or none", c.NginxConfirm)
	}
	if c.Wait != nil && (c.Wait.Min < 0 || c.Wait.Max < c.Wait.Min) {
		return usagef("--wait %v:%v: want 0 <= min <= max", c.Wait.Min, c.Wait.Max)
	}
	switch strings.ToLower(c.LogLevel) {
	case "", "debug", "info", "warn", "warning", "error":
	default:
		return usagef("--log-level %q: want debug, info, warn or error", c.LogLevel)
	}
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
