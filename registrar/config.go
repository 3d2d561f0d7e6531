package registrar

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/rollcall/rollcall/cli"
	"github.com/rollcall/rollcall/registry"
)

// Config is everything Run needs. Start from DefaultConfig, or build it
// from the command line and environment with ParseArgs.
type Config struct {
	App       string     // app name, registry.ValidName
	Env       string     // environment name, registry.ValidName
	Endpoints []string   // etcd endpoints, host:port or URL
	Prefix    string     // key prefix, "" by default
	IP        netip.Addr // address to advertise; zero: the host's primary IPv4
	Port      uint16     // fixed port; 0: pick one in PortRange
	PortRange PortRange  // where to pick
	PortEnv   []string   // env vars the app gets the port in (HOST_IP too)

	TTL           time.Duration // lease TTL, whole seconds
	Check         string        // "tcp", "none" or an http(s) URL template
	CheckInterval time.Duration // health check period once ready
	DrainTimeout  time.Duration // longest wait for renderers to drop the key
	StopTimeout   time.Duration // SIGTERM to the app, SIGKILL after this

	CACert, Cert, Key string // TLS files for etcd
	User, Password    string // etcd auth; Password comes from ETCD_PASSWORD
	DialTimeout       time.Duration

	Command []string // the app: argv[0] and its arguments

	LogLevel string // --log-level for cmd/registrar's logger (cli.ParseLevel); Run does not read it
}

// PortRange is an inclusive range of ports.
type PortRange struct{ Lo, Hi uint16 }

func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.Lo, r.Hi) }

// Size is the number of ports in the range.
func (r PortRange) Size() int { return int(r.Hi) - int(r.Lo) + 1 }

// ParsePortRange parses "lo-hi" with 1 <= lo <= hi <= 65535.
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, ok := strings.Cut(s, "-")
	if !ok {
		return PortRange{}, fmt.Errorf("port range %q: want lo-hi", s)
	}
	l, err1 := strconv.ParseUint(lo, 10, 16)
	h, err2 := strconv.ParseUint(hi, 10, 16)
	if err1 != nil || err2 != nil || l == 0 || h < l {
		return PortRange{}, fmt.Errorf("port range %q: want lo-hi with 1 <= lo <= hi <= 65535", s)
	}
	return PortRange{uint16(l), uint16(h)}, nil
}

// DefaultConfig returns the defaults DESIGN.md gives.
func DefaultConfig() Config {
	return Config{
		Endpoints:     []string{"127.0.0.1:2379"},
		PortRange:     PortRange{20000, 32767},
		PortEnv:       []string{"PORT"},
		TTL:           10 * time.Second,
		Check:         "tcp",
		CheckInterval: 2 * time.Second,
		DrainTimeout:  10 * time.Second,
		StopTimeout:   30 * time.Second,
		DialTimeout:   3 * time.Second,
		LogLevel:      "info",
	}
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Validate reports the first configuration mistake as a *cli.UsageError.
func (c *Config) Validate() error {
	if c.App == "" {
		return cli.Usagef("--app (REGISTRAR_APP) is required")
	}
	if err := registry.ValidName(c.App); err != nil {
		return cli.Usagef("--app: %v", err)
	}
	if c.Env == "" {
		return cli.Usagef("--env (REGISTRAR_ENV) is required")
	}
	if err := registry.ValidName(c.Env); err != nil {
		return cli.Usagef("--env: %v", err)
	}
	if err := c.validateEtcd(); err != nil {
		return err
	}
	if strings.Contains(c.Prefix, "//") {
		return cli.Usagef("--prefix %q: empty path segment", c.Prefix)
	}
	if c.IP.IsValid() && (c.IP.Zone() != "" || c.IP.Is4In6() || c.IP.IsUnspecified()) {
		return cli.Usagef("--ip %s: want a plain unicast address to advertise", c.IP)
	}
	if c.Port == 0 && (c.PortRange.Lo == 0 || c.PortRange.Hi < c.PortRange.Lo) {
		return cli.Usagef("--port-range %s: want lo-hi with 1 <= lo <= hi <= 65535", c.PortRange)
	}
	if len(c.PortEnv) == 0 {
		return cli.Usagef("--port-env: no variable name")
	}
	for _, n := range c.PortEnv {
		if !envNameRE.MatchString(n) {
			return cli.Usagef("--port-env: bad variable name %q", n)
		}
	}
	if c.TTL < time.Second || c.TTL%time.Second != 0 {
		return cli.Usagef("--ttl %v: want whole seconds, at least 1s (etcd rounds up to 2s)", c.TTL)
	}
	if _, err := parseCheck(c.Check); err != nil {
		return cli.Usagef("--check: %v", err)
	}
	if err := c.validateTimeouts(); err != nil {
		return err
	}
	if _, err := cli.ParseLevel(c.LogLevel); err != nil {
		return cli.Usagef("--log-level: %v", err)
	}
	if len(c.Command) == 0 || c.Command[0] == "" {
		return cli.Usagef("missing command: registrar [flags] -- COMMAND [ARG...]")
	}
	return nil
}

// validateTimeouts checks the check interval and the timeouts.
func (c *Config) validateTimeouts() error {
	for _, d := range []struct {
		name string
		v    time.Duration
		min  time.Duration
	}{
		{"--check-interval", c.CheckInterval, time.Millisecond},
		{"--drain-timeout", c.DrainTimeout, 0},
		{"--stop-timeout", c.StopTimeout, 0},
		{"--dial-timeout", c.DialTimeout, time.Millisecond},
	} {
		if d.v < d.min {
			return cli.Usagef("%s %v: must be at least %v", d.name, d.v, d.min)
		}
	}
	return nil
}

// validateEtcd checks the endpoints, TLS files and auth flags.
func (c *Config) validateEtcd() error {
	if len(c.Endpoints) == 0 {
		return cli.Usagef("--endpoints: no etcd endpoint")
	}
	for _, e := range c.Endpoints {
		if e == "" || strings.ContainsAny(e, " \t,") {
			return cli.Usagef("--endpoints: bad endpoint %q", e)
		}
	}
	if (c.Cert == "") != (c.Key == "") {
		return cli.Usagef("--cert and --key go together")
	}
	if c.Password != "" && c.User == "" {
		return cli.Usagef("ETCD_PASSWORD is set but --user (ETCD_USER) is not")
	}
	if strings.Contains(c.User, ":") {
		return cli.Usagef("--user: the password comes from ETCD_PASSWORD, not user:password")
	}
	return nil
}
