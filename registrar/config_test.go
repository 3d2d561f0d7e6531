package registrar

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/rollcall/rollcall/cli"
	"time"
)

func validConfig() Config {
	c := DefaultConfig()
	c.App, c.Env = "search", "PRE"
	c.Command = []string{"app"}
	return c
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(c *Config)
		want   string // substring of the usage error; "" = valid
	}{
		{"defaults", func(c *Config) {}, ""},
		{"ipv6 ip", func(c *Config) { c.IP = netip.MustParseAddr("::1") }, ""},
		{"fixed port, no range", func(c *Config) { c.Port, c.PortRange = 8080, PortRange{} }, ""},
		{"http check", func(c *Config) { c.Check = "http://{{.IP}}:{{.Port}}/health" }, ""},
		{"zero drain", func(c *Config) { c.DrainTimeout = 0 }, ""},
		{"user and password", func(c *Config) { c.User, c.Password = "u", "p" }, ""},
		{"missing app", func(c *Config) { c.App = "" }, "--app (REGISTRAR_APP) is required"},
		{"bad app", func(c *Config) { c.App = "se arch" }, "--app: invalid name"},
		{"app with underscore", func(c *Config) { c.App = "my_app" }, "--app: invalid name"},
		{"app leading dot", func(c *Config) { c.App = ".x" }, "--app: invalid name"},
		{"missing env", func(c *Config) { c.Env = "" }, "--env (REGISTRAR_ENV) is required"},
		{"bad env", func(c *Config) { c.Env = "PRE/1" }, "--env: invalid name"},
		{"no endpoints", func(c *Config) { c.Endpoints = nil }, "--endpoints: no etcd endpoint"},
		{"bad endpoint", func(c *Config) { c.Endpoints = []string{"a b"} }, "--endpoints: bad endpoint"},
		{"prefix double slash", func(c *Config) { c.Prefix = "/a//b" }, "--prefix"},
		{"unspecified ip", func(c *Config) { c.IP = netip.MustParseAddr("0.0.0.0") }, "--ip 0.0.0.0"},
		{"zoned ip", func(c *Config) { c.IP = netip.MustParseAddr("fe80::1%eth0") }, "--ip"},
		{"mapped ip", func(c *Config) { c.IP = netip.MustParseAddr("::ffff:1.2.3.4") }, "--ip"},
		{"reversed range", func(c *Config) { c.PortRange = PortRange{30000, 20000} }, "--port-range 30000-20000"},
		{"zero range", func(c *Config) { c.PortRange = PortRange{} }, "--port-range"},
		{"no port env", func(c *Config) { c.PortEnv = nil }, "--port-env: no variable name"},
		{"bad port env", func(c *Config) { c.PortEnv = []string{"PORT", "1X"} }, `--port-env: bad variable name "1X"`},
		{"ttl below 1s", func(c *Config) { c.TTL = 500 * time.Millisecond }, "--ttl 500ms"},
		{"ttl fraction", func(c *Config) { c.TTL = 2500 * time.Millisecond }, "--ttl 2.5s"},
		{"bad check", func(c *Config) { c.Check = "udp" }, "--check"},
		{"bad check template", func(c *Config) { c.Check = "http://{{.Nope}}/" }, "--check"},
		{"check without host", func(c *Config) { c.Check = "http:///x" }, "--check"},
		{"zero check interval", func(c *Config) { c.CheckInterval = 0 }, "--check-interval"},
		{"negative drain", func(c *Config) { c.DrainTimeout = -time.Second }, "--drain-timeout"},
		{"negative stop", func(c *Config) { c.StopTimeout = -time.Second }, "--stop-timeout"},
		{"cert without key", func(c *Config) { c.Cert = "c.pem" }, "--cert and --key go together"},
		{"key without cert", func(c *Config) { c.Key = "k.pem" }, "--cert and --key go together"},
		{"password without user", func(c *Config) { c.Password = "p" }, "ETCD_PASSWORD is set but --user"},
		{"user with password", func(c *Config) { c.User = "u:p" }, "--user"},
		{"missing command", func(c *Config) { c.Command = nil }, "missing command"},
		{"empty command", func(c *Config) { c.Command = []string{""} }, "missing command"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.change(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v; want nil", err)
				}
				return
			}
			ue, ok := err.(*cli.UsageError)
			if !ok || !strings.Contains(ue.Error(), tc.want) || strings.Contains(ue.Error(), "\n") {
				t.Fatalf("Validate() = %#v; want one-line *cli.UsageError containing %q", err, tc.want)
			}
		})
	}
}

func TestParsePortRange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    PortRange
		wantErr bool
	}{
		{"20000-32767", PortRange{20000, 32767}, false},
		{"80-80", PortRange{80, 80}, false},
		{"1-65535", PortRange{1, 65535}, false},
		{"0-10", PortRange{}, true},
		{"10-9", PortRange{}, true},
		{"10-65536", PortRange{}, true},
		{"10", PortRange{}, true},
		{"a-b", PortRange{}, true},
		{"-1-5", PortRange{}, true},
	}
	for _, tc := range tests {
		got, err := ParsePortRange(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ParsePortRange(%q) = %v, %v; want %v, err %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}
