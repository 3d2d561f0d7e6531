package renderer

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/rollcall/rollcall/cli"
	"github.com/rollcall/rollcall/renderer/confd"
)

// fileConfig is renderer.toml: confd.toml's keys plus rollcall's own.
// Unknown keys load with a warning, as confd ignores them.
type fileConfig struct {
	// confd.toml keys.
	Backend      string   `toml:"backend"`
	ConfDir      string   `toml:"confdir"`
	Nodes        []string `toml:"nodes"`
	Prefix       string   `toml:"prefix"`
	Interval     *int     `toml:"interval"` // seconds
	Watch        *bool    `toml:"watch"`    // accepted; the renderer always watches
	ClientCert   string   `toml:"client_cert"`
	ClientKey    string   `toml:"client_key"`
	ClientCAKeys string   `toml:"client_cakeys"`
	Username     string   `toml:"username"`
	Password     string   `toml:"password"`
	LogLevel     string   `toml:"log-level"`
	Noop         *bool    `toml:"noop"`
	Onetime      *bool    `toml:"onetime"`
	Scheme       string   `toml:"scheme"` // for nodes found through SRV
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
	Push           string   `toml:"push"`
	GuardShare     *float64 `toml:"guard_share"`
	GuardGrace     string   `toml:"guard_grace"`
}

// configPath picks the config file: the one a flag names (--config must
// exist; confd's -config-file may be missing, as in confd), else
// <confdir>/renderer.toml, else <confdir>/confd.toml; "" = none.
func (c *Config) configPath(set map[string]bool, mustExist bool) (string, error) {
	if set["config"] {
		if _, err := os.Stat(c.ConfigFile); errors.Is(err, os.ErrNotExist) && !mustExist {
			c.Warnings = append(c.Warnings, "-config-file "+c.ConfigFile+": not found, skipped (as confd skips it)")
			return "", nil
		}
		return c.ConfigFile, nil
	}
	for _, name := range []string{"renderer.toml", "confd.toml"} {
		p := filepath.Join(c.ConfDir, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", cli.Usagef("config: %v", err)
		}
	}
	return "", nil
}

// mergeFile reads the config file and fills what neither a flag nor the
// environment set. It returns the file for the settings ParseArgs merges
// itself (backend, SRV).
func (c *Config) mergeFile(set map[string]bool, mustExist bool) (fileConfig, error) {
	path, err := c.configPath(set, mustExist)
	if err != nil || path == "" {
		return fileConfig{}, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fileConfig{}, cli.Usagef("config: %v", err)
	}
	f, warnings, err := parseFile(path, data)
	if err != nil {
		return f, err
	}
	c.Warnings = append(c.Warnings, warnings...)
	str := func(flagName string, dst *string, v string) {
		if !set[flagName] && v != "" {
			*dst = v
		}
	}
	if !set["confdir"] && f.ConfDir != "" && set["config"] {
		c.ConfDir = f.ConfDir
	}
	str("prefix", &c.Prefix, f.Prefix)
	str("cacert", &c.CACert, f.ClientCAKeys)
	str("cert", &c.Cert, f.ClientCert)
	str("key", &c.Key, f.ClientKey)
	str("user", &c.User, f.Username)
	str("password", &c.Password, f.Password)
	str("log-level", &c.LogLevel, f.LogLevel)
	str("embed-etcd", &c.EmbedEtcd, f.EmbedEtcd)
	str("embed-listen", &c.EmbedListen, f.EmbedListen)
	str("metrics-addr", &c.MetricsAddr, f.MetricsAddr)
	str("id", &c.ID, f.ID)
	str("nginx-pid", &c.NginxPID, f.NginxPID)
	str("nginx-error-log", &c.NginxErrorLog, f.NginxErrorLog)
	str("nginx-confirm", &c.NginxConfirm, f.NginxConfirm)
	str("push", &c.Push, f.Push)
	if nodes := append(append([]string{}, f.Endpoints...), f.Nodes...); !set["endpoints"] && len(nodes) > 0 {
		c.Endpoints = nodes
	}
	return f, c.mergeFileValues(path, f, set)
}

// mergeFileValues fills the numbers, switches and durations of the file
// that no flag set.
func (c *Config) mergeFileValues(path string, f fileConfig, set map[string]bool) error {
	if !set["interval"] && f.Interval != nil {
		if *f.Interval < 0 {
			return cli.Usagef("config %s: interval %d: negative", path, *f.Interval)
		}
		c.Interval = time.Duration(*f.Interval) * time.Second
	}
	for _, b := range []struct {
		flag string
		v    *bool
		dst  *bool
	}{{"onetime", f.Onetime, &c.Onetime}, {"noop", f.Noop, &c.Noop}, {"sync-only", f.SyncOnly, &c.SyncOnly}} {
		if !set[b.flag] && b.v != nil {
			*b.dst = *b.v
		}
	}
	if !set["reload-burst"] && f.ReloadBurst != nil {
		c.ReloadBurst = *f.ReloadBurst
	}
	if !set["guard-share"] && f.GuardShare != nil {
		c.GuardShare = *f.GuardShare
	}
	if !set["strict-values"] && f.StrictValues != nil {
		c.LaxValues = !*f.StrictValues
	}
	if !set["wait"] && f.Wait != "" {
		w, err := confd.ParseWait(f.Wait)
		if err != nil {
			return cli.Usagef("config %s: wait %q: %v", path, f.Wait, err)
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
			return cli.Usagef("config %s: %s %q: %v", path, d.key, d.v, err)
		}
		*d.dst = v
	}
	return nil
}

// parseFile decodes the config file. A key it does not know is a warning
// naming the file and key (confd ignores such keys); a wrong type or bad
// TOML is an error.
func parseFile(path string, data []byte) (fileConfig, []string, error) {
	var f fileConfig
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&f)
	if err != nil {
		return f, nil, cli.Usagef("config %s: %v", path, err)
	}
	var warnings []string
	for _, k := range md.Undecoded() {
		key := k.String()
		if backend, ok := otherBackends[strings.ReplaceAll(key, "_", "-")]; ok {
			warnings = append(warnings, fmt.Sprintf("config %s: key %q is for confd's %s backend: ignored", path, key, backend))
			continue
		}
		warnings = append(warnings, fmt.Sprintf("config %s: unknown key %q ignored", path, key))
	}
	return f, warnings, nil
}
