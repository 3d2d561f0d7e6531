package renderer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rollcall/rollcall/renderer/confd"
)

func TestParseArgs(t *testing.T) {
	t.Parallel()
	w := func(min, max time.Duration) *confd.Wait { return &confd.Wait{Min: min, Max: max} }
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		file  string // renderer.toml in the confdir; "" = none
		check func(c Config) string
		err   string // substring of the usage error; "" = success
	}{
		{name: "defaults", check: func(c Config) string {
			if !reflect.DeepEqual(c.Endpoints, []string{"127.0.0.1:2379"}) || c.Prefix != "" || c.Onetime || c.Noop ||
				c.Wait != nil || c.Cooldown != time.Second || c.ReloadBurst != 2 || c.EmbedListen != "127.0.0.1:2379" || c.ID == "" ||
				c.CommandTimeout != 30*time.Second || c.LogLevel != "info" {
				return "unexpected defaults"
			}
			return ""
		}},
		{name: "flags", args: []string{"--endpoints", "a:1, b:2", "--prefix", "/p/", "--onetime", "--noop", "--wait", "2s:10s",
			"--cooldown", "250ms", "--reload-burst", "3", "--interval", "1m", "--embed-etcd", "/d", "--embed-listen", "127.0.0.1:1", "--metrics-addr", ":9",
			"--id", "gw", "--log-level", "debug", "--cacert", "ca", "--cert", "c", "--key", "k", "--user", "u", "--command-timeout", "5s",
			"--guard-share", "0.7", "--guard-grace", "5s"},
			env: map[string]string{"ETCD_PASSWORD": "pw"},
			check: func(c Config) string {
				want := Config{ConfDir: c.ConfDir, Endpoints: []string{"a:1", "b:2"}, Prefix: "/p", Onetime: true, Noop: true,
					Wait: w(2*time.Second, 10*time.Second), Cooldown: 250 * time.Millisecond, ReloadBurst: 3, Interval: time.Minute, EmbedEtcd: "/d",
					EmbedListen: "127.0.0.1:1", MetricsAddr: ":9", ID: "gw", LogLevel: "debug", CACert: "ca", Cert: "c", Key: "k",
					User: "u", Password: "pw", CommandTimeout: 5 * time.Second, AckTTL: DefaultAckTTL,
					NginxPID: DefaultNginxPID, NginxErrorLog: DefaultNginxErrorLog, NginxConfirm: ConfirmAuto,
					GuardShare: 0.7, GuardGrace: 5 * time.Second}
				if !reflect.DeepEqual(c, want) {
					return "got " + reflectString(c)
				}
				return ""
			}},
		{name: "guard keys", file: "guard_share = 0.8\nguard_grace = \"1m\"\n", check: func(c Config) string {
			if c.GuardShare != 0.8 || c.GuardGrace != time.Minute {
				return fmt.Sprintf("guard %v %v", c.GuardShare, c.GuardGrace)
			}
			return ""
		}},
		{name: "guard share negative", args: []string{"--guard-share", "-0.1"}, err: "--guard-share"},
		{name: "wait min only", args: []string{"--wait", "1s"}, check: func(c Config) string {
			if *c.Wait != *w(time.Second, 4*time.Second) {
				return "wait " + c.Wait.String()
			}
			return ""
		}},
		{name: "env endpoints", env: map[string]string{"ETCD_ENDPOINTS": "e:1,e:2"}, check: func(c Config) string {
			if !reflect.DeepEqual(c.Endpoints, []string{"e:1", "e:2"}) {
				return "endpoints " + strings.Join(c.Endpoints, ",")
			}
			return ""
		}},
		{name: "flag beats env", args: []string{"--endpoints", "f:1"}, env: map[string]string{"ETCD_ENDPOINTS": "e:1"},
			check: func(c Config) string {
				if !reflect.DeepEqual(c.Endpoints, []string{"f:1"}) {
					return "endpoints " + strings.Join(c.Endpoints, ",")
				}
				return ""
			}},
		{name: "confd.toml keys", file: `
backend = "etcdv3"
nodes = ["n1:2379", "n2:2379"]
scheme = "https"
prefix = "prod"
interval = 600
watch = true
client_cert = "c.pem"
client_key = "k.pem"
client_cakeys = "ca.pem"
username = "root"
password = "secret"
log-level = "warn"
noop = false
onetime = false
basic_auth = true
`, check: func(c Config) string {
			if !reflect.DeepEqual(c.Endpoints, []string{"https://n1:2379", "https://n2:2379"}) || c.Prefix != "/prod" ||
				c.Interval != 600*time.Second || c.Cert != "c.pem" || c.Key != "k.pem" || c.CACert != "ca.pem" ||
				c.User != "root" || c.Password != "secret" || c.LogLevel != "warn" {
				return "got " + reflectString(c)
			}
			return ""
		}},
		{name: "rollcall keys", file: `
endpoints = ["x:1"]
wait = "1s:3s"
cooldown = "2s"
reload_burst = 4
embed_etcd = "/var/lib/e"
embed_listen = "127.0.0.1:3"
metrics_addr = "127.0.0.1:4"
id = "gw9"
command_timeout = "9s"
onetime = true
noop = true
`, check: func(c Config) string {
			if !reflect.DeepEqual(c.Endpoints, []string{"x:1"}) || *c.Wait != *w(time.Second, 3*time.Second) ||
				c.Cooldown != 2*time.Second || c.ReloadBurst != 4 || c.EmbedEtcd != "/var/lib/e" || c.EmbedListen != "127.0.0.1:3" ||
				c.MetricsAddr != "127.0.0.1:4" || c.ID != "gw9" || c.CommandTimeout != 9*time.Second || !c.Onetime || !c.Noop {
				return "got " + reflectString(c)
			}
			return ""
		}},
		{name: "flags beat file", args: []string{"--prefix", "/f", "--endpoints", "f:1", "--wait", "1s:2s", "--cooldown", "3s", "--user", "fu"},
			env:  map[string]string{"ETCD_PASSWORD": "envpw"},
			file: "prefix = \"/file\"\nnodes = [\"n:1\"]\nwait = \"5s:9s\"\ncooldown = \"7s\"\nusername = \"filu\"\npassword = \"filepw\"\n",
			check: func(c Config) string {
				if c.Prefix != "/f" || c.Endpoints[0] != "f:1" || c.Wait.Min != time.Second || c.Cooldown != 3*time.Second ||
					c.User != "fu" || c.Password != "envpw" {
					return "got " + reflectString(c)
				}
				return ""
			}},
		{name: "env beats file", env: map[string]string{"ETCD_ENDPOINTS": "e:1"}, file: "nodes = [\"n:1\"]\n",
			check: func(c Config) string {
				if c.Endpoints[0] != "e:1" {
					return "endpoints " + strings.Join(c.Endpoints, ",")
				}
				return ""
			}},
		{name: "unknown flag", args: []string{"--nope"}, err: "flag provided but not defined"},
		{name: "extra argument", args: []string{"x"}, err: `unexpected argument "x"`},
		{name: "help", args: []string{"--help"}, err: "usage: renderer"},
		{name: "bad wait", args: []string{"--wait", "soon"}, err: "--wait"},
		{name: "wait max below min", args: []string{"--wait", "5s:1s"}, err: "--wait"},
		{name: "negative cooldown", args: []string{"--cooldown", "-1s"}, err: "--cooldown"},
		{name: "negative reload burst", args: []string{"--reload-burst", "-1"}, err: "--reload-burst"},
		{name: "negative interval", args: []string{"--interval", "-1s"}, err: "--interval"},
		{name: "bad log level", args: []string{"--log-level", "loud"}, err: "--log-level"},
		{name: "cert without key", args: []string{"--cert", "c"}, err: "--cert and --key"},
		{name: "id with slash", args: []string{"--id", "a/b"}, err: "--id"},
		{name: "missing --config", args: []string{"--config", "/nonexistent/r.toml"}, err: "no such file"},
		{name: "unknown key", file: "nodes = [\"a\"]\ncolour = \"blue\"\n", err: "unknown key(s) colour"},
		{name: "bad toml", file: "nodes = [", err: "renderer.toml"},
		{name: "consul backend", file: "backend = \"consul\"\n", err: `backend "consul" not supported`},
		{name: "bad scheme", file: "scheme = \"gopher\"\n", err: "scheme"},
		{name: "srv", file: "srv_domain = \"example.com\"\n", err: "srv_domain"},
		{name: "sync-only", file: "sync-only = true\n", err: "sync-only"},
		{name: "bad file wait", file: "wait = \"x\"\n", err: "wait"},
		{name: "bad file cooldown", file: "cooldown = \"x\"\n", err: "cooldown"},
		{name: "negative file interval", file: "interval = -1\n", err: "interval"},
		{name: "wrong type", file: "interval = \"10\"\n", err: "renderer.toml"},
		{name: "nginx and values flags", args: []string{"--strict-values=false", "--nginx-pid", "/p.pid", "--nginx-error-log", "/e.log", "--nginx-confirm", "all"},
			file: "strict_values = true\nnginx_pid = \"/f.pid\"\n",
			check: func(c Config) string {
				if !c.LaxValues || c.NginxPID != "/p.pid" || c.NginxErrorLog != "/e.log" || c.NginxConfirm != ConfirmAll {
					return "got " + reflectString(c)
				}
				return ""
			}},
		{name: "nginx and values keys", file: "strict_values = false\nnginx_pid = \"/f.pid\"\nnginx_error_log = \"/f.log\"\nnginx_confirm = \"none\"\n",
			check: func(c Config) string {
				if !c.LaxValues || c.NginxPID != "/f.pid" || c.NginxErrorLog != "/f.log" || c.NginxConfirm != ConfirmNone {
					return "got " + reflectString(c)
				}
				return ""
			}},
		{name: "strict by default", check: func(c Config) string {
			if c.LaxValues || c.NginxPID != "/run/nginx.pid" || c.NginxConfirm != ConfirmAuto {
				return "got " + reflectString(c)
			}
			return ""
		}},
		{name: "bad nginx-confirm", args: []string{"--nginx-confirm", "maybe"}, err: "--nginx-confirm"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if tc.file != "" {
				if err := os.WriteFile(filepath.Join(dir, "renderer.toml"), []byte(tc.file), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			args := append([]string{"--confdir", dir}, tc.args...)
			c, err := ParseArgs(args, func(k string) string { return tc.env[k] })
			if tc.err != "" {
				var ue *UsageError
				if err == nil || !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseArgs(%q) = %v; want *UsageError containing %q", tc.args, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseArgs(%q) = %v", tc.args, err)
			}
			if msg := tc.check(c); msg != "" {
				t.Errorf("ParseArgs(%q): %s", tc.args, msg)
			}
		})
	}
}

// TestParseArgsConfigFlag: --config names the file, which may set confdir.
func TestParseArgsConfigFlag(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "confd.toml")
	if err := os.WriteFile(p, []byte("confdir = \"/etc/confd\"\nbackend = \"etcd\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := ParseArgs([]string{"--config", p}, func(string) string { return "" })
	if err != nil || c.ConfDir != "/etc/confd" {
		t.Fatalf("ParseArgs(--config) = %q, %v; want confdir /etc/confd", c.ConfDir, err)
	}
}

func reflectString(c Config) string { return fmt.Sprintf("%+v", c) }
