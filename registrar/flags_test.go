package registrar

import (
	"errors"
	"flag"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rollcall/rollcall/cli"
)

func TestParseArgs(t *testing.T) {
	t.Parallel()
	base := []string{"--app", "search", "--env", "PRE"}
	args := func(a ...string) []string { return append(slices.Clone(base), a...) }
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(c Config) string // "" when as expected
	}{
		{"defaults", args("--", "java", "-jar", "app.jar"), nil, func(c Config) string {
			d := DefaultConfig()
			switch {
			case c.App != "search" || c.Env != "PRE":
				return "app/env"
			case !slices.Equal(c.Endpoints, []string{"127.0.0.1:2379"}), c.Prefix != "", c.IP.IsValid(), c.Port != 0:
				return "endpoints/prefix/ip/port defaults"
			case c.PortRange != d.PortRange, !slices.Equal(c.PortEnv, []string{"PORT"}):
				return "port range/env defaults"
			case c.TTL != 10*time.Second, c.Check != "tcp", c.DrainTimeout != 10*time.Second, c.StopTimeout != 30*time.Second:
				return "timing defaults"
			case !slices.Equal(c.Command, []string{"java", "-jar", "app.jar"}):
				return "command"
			case level(c) != slog.LevelInfo:
				return "level"
			}
			return ""
		}},
		{"every flag", []string{"--app=a", "--env=prod", "--endpoints", "e1:2379, e2:2379", "--prefix", "/svc",
			"--ip", "10.1.2.3", "--port", "8080", "--port-range", "30000-30010", "--port-env", "PORT,SERVER_PORT",
			"--ttl", "5s", "--check", "http://{{.IP}}:{{.Port}}/health", "--check-interval", "1s",
			"--drain-timeout", "3s", "--stop-timeout", "4s", "--dial-timeout", "2s", "--cacert", "ca.pem",
			"--cert", "c.pem", "--key", "k.pem", "--user", "root", "--log-level", "debug", "--", "app", "--port", "1"},
			map[string]string{"ETCD_PASSWORD": "pw"}, func(c Config) string {
				switch {
				case c.App != "a" || c.Env != "prod" || c.Prefix != "/svc":
					return "names"
				case !slices.Equal(c.Endpoints, []string{"e1:2379", "e2:2379"}):
					return "endpoints"
				case c.IP != netip.MustParseAddr("10.1.2.3") || c.Port != 8080 || c.PortRange != (PortRange{Lo: 30000, Hi: 30010}):
					return "ip/port"
				case !slices.Equal(c.PortEnv, []string{"PORT", "SERVER_PORT"}):
					return "port env"
				case c.TTL != 5*time.Second || c.CheckInterval != time.Second || c.DrainTimeout != 3*time.Second ||
					c.StopTimeout != 4*time.Second || c.DialTimeout != 2*time.Second:
					return "durations"
				case c.CACert != "ca.pem" || c.Cert != "c.pem" || c.Key != "k.pem" || c.User != "root" || c.Password != "pw":
					return "tls/auth"
				case !slices.Equal(c.Command, []string{"app", "--port", "1"}):
					return "command keeps its own flags"
				case level(c) != slog.LevelDebug:
					return "level"
				}
				return ""
			}},
		{"env fills", []string{"--", "app"}, map[string]string{
			"REGISTRAR_APP": "web", "REGISTRAR_ENV": "PRE", "ETCD_ENDPOINTS": "h:1,h:2", "REGISTRAR_PREFIX": "/p",
			"REGISTRAR_IP": "::1", "REGISTRAR_PORT": "99", "ETCD_USER": "u", "ETCD_PASSWORD": "p",
			"ETCD_CACERT": "ca", "REGISTRAR_TTL": "3s"},
			func(c Config) string {
				if c.App != "web" || c.Env != "PRE" || !slices.Equal(c.Endpoints, []string{"h:1", "h:2"}) || c.Prefix != "/p" ||
					c.IP != netip.MustParseAddr("::1") || c.Port != 99 || c.User != "u" || c.Password != "p" ||
					c.CACert != "ca" || c.TTL != 3*time.Second {
					return "env not applied"
				}
				return ""
			}},
		{"flags win over env", args("--endpoints", "flag:1", "--port", "5", "--", "app"),
			map[string]string{"REGISTRAR_APP": "envapp", "ETCD_ENDPOINTS": "env:1", "REGISTRAR_PORT": "6"},
			func(c Config) string {
				if c.App != "search" || !slices.Equal(c.Endpoints, []string{"flag:1"}) || c.Port != 5 {
					return "env won"
				}
				return ""
			}},
		{"confd's fatal level means error", args("--log-level", "fatal", "--", "app"), nil, func(c Config) string {
			if level(c) != slog.LevelError {
				return "level"
			}
			return ""
		}},
		{"level from env", args("--", "app"), map[string]string{"REGISTRAR_LOG_LEVEL": "warning"}, func(c Config) string {
			if level(c) != slog.LevelWarn {
				return "level"
			}
			return ""
		}},
		{"command without --", args("app", "x"), nil, func(c Config) string {
			if !slices.Equal(c.Command, []string{"app", "x"}) {
				return "command"
			}
			return ""
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseArgs(tc.args, func(k string) string { return tc.env[k] })
			if err != nil {
				t.Fatalf("ParseArgs(%q) = %v", tc.args, err)
			}
			if what := tc.check(c); what != "" {
				t.Fatalf("ParseArgs(%q): wrong %s: %+v", tc.args, what, c)
			}
		})
	}
}

// level is c's log level as cmd/registrar reads it.
func level(c Config) slog.Level {
	l, err := cli.ParseLevel(c.LogLevel)
	if err != nil {
		return -100
	}
	return l
}

func TestParseUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"missing app", []string{"--env", "PRE", "--", "a"}, nil, "--app (REGISTRAR_APP) is required"},
		{"missing env", []string{"--app", "x", "--", "a"}, nil, "--env (REGISTRAR_ENV) is required"},
		{"bad app", []string{"--app", "a/b", "--env", "PRE", "--", "a"}, nil, "--app: invalid name"},
		{"bad env from env", []string{"--app", "a", "--", "a"}, map[string]string{"REGISTRAR_ENV": "P RE"}, "--env: invalid name"},
		{"missing command", []string{"--app", "a", "--env", "PRE"}, nil, "missing command"},
		{"missing command after --", []string{"--app", "a", "--env", "PRE", "--"}, nil, "missing command"},
		{"unknown flag", []string{"--nope", "--", "a"}, nil, "flag provided but not defined: -nope"},
		{"bad port", []string{"--app", "a", "--env", "PRE", "--port", "70000", "--", "a"}, nil, "want a port 1-65535"},
		{"zero port", []string{"--app", "a", "--env", "PRE", "--port", "0", "--", "a"}, nil, "want a port 1-65535"},
		{"bad range", []string{"--app", "a", "--env", "PRE", "--port-range", "9-1", "--", "a"}, nil, "port range \"9-1\""},
		{"range not numbers", []string{"--app", "a", "--env", "PRE", "--port-range", "x", "--", "a"}, nil, "want lo-hi"},
		{"bad ip", []string{"--app", "a", "--env", "PRE", "--ip", "host.example", "--", "a"}, nil, "want an IP address"},
		{"bad ttl", []string{"--app", "a", "--env", "PRE", "--ttl", "ten", "--", "a"}, nil, "invalid value \"ten\" for flag -ttl"},
		{"short ttl", []string{"--app", "a", "--env", "PRE", "--ttl", "100ms", "--", "a"}, nil, "--ttl 100ms"},
		{"bad check", []string{"--app", "a", "--env", "PRE", "--check", "ping", "--", "a"}, nil, "--check"},
		{"bad port env", []string{"--app", "a", "--env", "PRE", "--port-env", "P-1", "--", "a"}, nil, "--port-env"},
		{"bad level", []string{"--app", "a", "--env", "PRE", "--log-level", "loud", "--", "a"}, nil, "-log-level"},
		{"bad env var value", []string{"--app", "a", "--env", "PRE", "--", "a"}, map[string]string{"REGISTRAR_PORT": "http"}, `REGISTRAR_PORT="http"`},
		{"password without user", []string{"--app", "a", "--env", "PRE", "--", "a"}, map[string]string{"ETCD_PASSWORD": "x"}, "ETCD_PASSWORD"},
		{"cert without key", []string{"--app", "a", "--env", "PRE", "--cert", "c", "--", "a"}, nil, "--cert and --key"},
		{"negative stop", []string{"--app", "a", "--env", "PRE", "--stop-timeout", "-1s", "--", "a"}, nil, "--stop-timeout"},
		{"empty endpoints", []string{"--app", "a", "--env", "PRE", "--endpoints", ",", "--", "a"}, nil, "--endpoints"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseArgs(tc.args, func(k string) string { return tc.env[k] })
			var ue *cli.UsageError
			if !errors.As(err, &ue) || !strings.Contains(ue.Error(), tc.want) || strings.Contains(ue.Error(), "\n") {
				t.Fatalf("ParseArgs(%q) = %v; want one-line *cli.UsageError containing %q", tc.args, err, tc.want)
			}
		})
	}
	if _, err := ParseArgs([]string{"--help"}, func(string) string { return "" }); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("ParseArgs(--help) = %v; want flag.ErrHelp", err)
	}
}
