package registrar

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/rollcall/rollcall/cli"
)

// flagSet declares every flag on c, with the environment variable that
// fills it when the flag is absent (flags win).
func flagSet(c *Config) (*flag.FlagSet, map[string]string) {
	fs := flag.NewFlagSet("registrar", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	env := map[string]string{}
	def := func(name, envName string, v flag.Value, usage string) {
		fs.Var(v, name, usage)
		if envName != "" {
			env[name] = envName
		}
	}
	def("app", "REGISTRAR_APP", (*stringValue)(&c.App), "app name (required)")
	def("env", "REGISTRAR_ENV", (*stringValue)(&c.Env), "environment: PRE, prod, ... (required)")
	def("endpoints", "ETCD_ENDPOINTS", (*listValue)(&c.Endpoints), "etcd endpoints, comma-separated")
	def("prefix", "REGISTRAR_PREFIX", (*stringValue)(&c.Prefix), "key prefix")
	def("ip", "REGISTRAR_IP", (*ipValue)(&c.IP), "address to advertise (default: the host's primary IPv4)")
	def("port", "REGISTRAR_PORT", (*portValue)(&c.Port), "fixed port (default: pick one in --port-range)")
	def("port-range", "REGISTRAR_PORT_RANGE", (*rangeValue)(&c.PortRange), "where to pick the port: lo-hi")
	def("port-env", "REGISTRAR_PORT_ENV", (*listValue)(&c.PortEnv), "env vars the app gets the port in, comma-separated")
	def("ttl", "REGISTRAR_TTL", (*durationValue)(&c.TTL), "lease TTL, whole seconds")
	def("check", "REGISTRAR_CHECK", (*stringValue)(&c.Check), "readiness: tcp, none or http://...{{.IP}}...{{.Port}}...")
	def("check-interval", "REGISTRAR_CHECK_INTERVAL", (*durationValue)(&c.CheckInterval), "health check period once ready")
	def("drain-timeout", "REGISTRAR_DRAIN_TIMEOUT", (*durationValue)(&c.DrainTimeout), "longest wait for gateways to drop the instance")
	def("stop-timeout", "REGISTRAR_STOP_TIMEOUT", (*durationValue)(&c.StopTimeout), "SIGTERM to the app, SIGKILL after this")
	def("dial-timeout", "ETCD_DIAL_TIMEOUT", (*durationValue)(&c.DialTimeout), "etcd connect and request timeout")
	def("cacert", "ETCD_CACERT", (*stringValue)(&c.CACert), "CA bundle to verify etcd")
	def("cert", "ETCD_CERT", (*stringValue)(&c.Cert), "client certificate for etcd")
	def("key", "ETCD_KEY", (*stringValue)(&c.Key), "client key for etcd")
	def("user", "ETCD_USER", (*stringValue)(&c.User), "etcd user (password from ETCD_PASSWORD)")
	def("log-level", "REGISTRAR_LOG_LEVEL", (*levelValue)(&c.LogLevel), "debug, info, warn, error")
	return fs, env
}

// ParseArgs builds a Config from DefaultConfig, the environment (getenv)
// and the command line (args, without the program name); flags win over
// the environment. Errors are *cli.UsageError, or flag.ErrHelp for -h.
func ParseArgs(args []string, getenv func(string) string) (Config, error) {
	c := DefaultConfig()
	fs, env := flagSet(&c)
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		name := env[f.Name]
		if v := getenv(name); name != "" && v != "" && err == nil {
			if e := f.Value.Set(v); e != nil {
				err = cli.Usagef("%s=%q: %v", name, v, e)
			}
		}
	})
	if err != nil {
		return c, err
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, &cli.UsageError{Err: err}
	}
	c.Password = getenv("ETCD_PASSWORD")
	c.Command = fs.Args()
	return c, c.Validate()
}

// Usage writes the flag reference to w.
func Usage(w io.Writer) {
	c := DefaultConfig()
	fs, env := flagSet(&c)
	fmt.Fprintln(w, "usage: registrar [flags] -- COMMAND [ARG...]")
	fs.VisitAll(func(f *flag.Flag) {
		extra := ""
		if v := f.Value.String(); v != "" && v != "0" && v != "invalid IP" {
			extra = " (default " + v + ")"
		}
		if env[f.Name] != "" {
			extra += " [env " + env[f.Name] + "]"
		}
		fmt.Fprintf(w, "  --%s\n    \t%s%s\n", f.Name, f.Usage, extra)
	})
	fmt.Fprintln(w, "  ETCD_PASSWORD\n    \tetcd password for --user")
}

type stringValue string

func (v *stringValue) String() string     { return string(*v) }
func (v *stringValue) Set(s string) error { *v = stringValue(s); return nil }

type listValue []string

func (v *listValue) String() string { return strings.Join(*v, ",") }
func (v *listValue) Set(s string) error {
	*v = nil
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			*v = append(*v, e)
		}
	}
	return nil
}

type ipValue netip.Addr

func (v *ipValue) String() string { return (*netip.Addr)(v).String() }
func (v *ipValue) Set(s string) error {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return fmt.Errorf("want an IP address: %w", err)
	}
	*v = ipValue(a)
	return nil
}

type portValue uint16

func (v *portValue) String() string { return strconv.Itoa(int(*v)) }
func (v *portValue) Set(s string) error {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil || p == 0 {
		return fmt.Errorf("want a port 1-65535")
	}
	*v = portValue(p)
	return nil
}

type rangeValue PortRange

func (v *rangeValue) String() string { return PortRange(*v).String() }
func (v *rangeValue) Set(s string) error {
	r, err := ParsePortRange(s)
	*v = rangeValue(r)
	return err
}

type durationValue time.Duration

func (v *durationValue) String() string { return time.Duration(*v).String() }
func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*v = durationValue(d)
	return nil
}

// levelValue is a --log-level, checked when set.
type levelValue string

func (v *levelValue) String() string { return string(*v) }
func (v *levelValue) Set(s string) error {
	if _, err := cli.ParseLevel(s); err != nil {
		return err
	}
	*v = levelValue(s)
	return nil
}
