package renderer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rollcall/rollcall/cli"
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
					NginxPID: DefaultNginxPID, NginxErrorLog: DefaultNginxErrorLog, NginxConfirm: ConfirmAuto, Push: PushAuto,
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
srv_domain = "example.com"
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
			if !reflect.DeepEqual(c.Endpoints, []string{"n1:2379", "n2:2379"}) || c.Prefix != "/prod" ||
				c.SRVRecord != "_etcdv3._tcp.example.com." || c.SRVScheme != "" ||
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
		{name: "bad toml", file: "nodes = [", err: "renderer.toml"},
		{name: "consul backend", file: "backend = \"consul\"\n", err: `backend "consul": not supported`},
		{name: "bad scheme", file: "scheme = \"gopher\"\n", err: "scheme"},
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
			c, ok := parseIn(t, tc.file, tc.args, tc.env, tc.err)
			if !ok {
				return
			}
			if msg := tc.check(c); msg != "" {
				t.Errorf("ParseArgs(%q): %s", tc.args, msg)
			}
		})
	}
}

// parseIn runs ParseArgs(-confdir DIR, args...) with file as DIR/renderer.toml
// (none when ""). With wantErr it checks for a *cli.UsageError of one line
// (help aside) containing wantErr and returns false; else it fails on any
// error.
func parseIn(t *testing.T, file string, args []string, env map[string]string, wantErr string) (Config, bool) {
	t.Helper()
	dir := t.TempDir()
	if file != "" {
		if err := os.WriteFile(filepath.Join(dir, "renderer.toml"), []byte(file), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c, err := ParseArgs(append([]string{"-confdir", dir}, args...), func(k string) string { return env[k] })
	if wantErr != "" {
		var ue *cli.UsageError
		if err == nil || !errors.As(err, &ue) || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("ParseArgs(%q) = %v; want *cli.UsageError containing %q", args, err, wantErr)
		}
		if strings.Contains(err.Error(), "\n") && !strings.HasPrefix(err.Error(), "usage: ") {
			t.Errorf("ParseArgs(%q) error %q: want one line", args, err)
		}
		return c, false
	}
	if err != nil {
		t.Fatalf("ParseArgs(%q) = %v", args, err)
	}
	return c, true
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

// same compares the named fields of got and want.
func same(got, want Config, fields ...string) string {
	g, w := reflect.ValueOf(got), reflect.ValueOf(want)
	var diffs []string
	for _, f := range fields {
		if !reflect.DeepEqual(g.FieldByName(f).Interface(), w.FieldByName(f).Interface()) {
			diffs = append(diffs, fmt.Sprintf("%s = %#v, want %#v", f, g.FieldByName(f).Interface(), w.FieldByName(f).Interface()))
		}
	}
	return strings.Join(diffs, "; ")
}

// TestParseArgsConfd: confd v0.16's command line, flag by flag, with confd's
// spelling and meaning; its other backends' flags refused by name.
func TestParseArgsConfd(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		args   []string
		env    map[string]string
		file   string   // renderer.toml in the confdir
		want   Config   // compared on fields
		fields []string // names of the fields compared
		warn   string   // substring of a warning; "" = none
		err    string   // substring of the usage error
	}{
		{name: "the classic supervisor line", args: []string{"-onetime", "-backend", "etcdv3", "-node", "http://127.0.0.1:2379"},
			want: Config{Onetime: true, Endpoints: []string{"http://127.0.0.1:2379"}}, fields: []string{"Onetime", "Endpoints"}},
		{name: "double dash works too", args: []string{"--watch", "--backend=etcdv3", "--node=https://10.0.0.1:2379"},
			want: Config{Endpoints: []string{"https://10.0.0.1:2379"}}, fields: []string{"Endpoints"}},
		{name: "backend etcd", args: []string{"-backend", "etcd"}, want: Config{Endpoints: []string{DefaultEndpoint}}, fields: []string{"Endpoints"}},
		{name: "backend consul", args: []string{"-backend", "consul"}, err: `backend "consul": not supported: the renderer reads etcd only`},
		{name: "backend redis", args: []string{"-backend=redis"}, err: `backend "redis": not supported`},
		{name: "backend empty", args: []string{"-backend="}, want: Config{Endpoints: []string{DefaultEndpoint}}, fields: []string{"Endpoints"}},
		{name: "two nodes", args: []string{"-node", "http://a:2379", "-node", "http://b:2379"},
			want: Config{Endpoints: []string{"http://a:2379", "http://b:2379"}}, fields: []string{"Endpoints"}},
		{name: "comma-separated node", args: []string{"-node", "http://a:2379,http://b:2379"},
			want: Config{Endpoints: []string{"http://a:2379", "http://b:2379"}}, fields: []string{"Endpoints"}},
		{name: "node and endpoints add up", args: []string{"-node", "a:1", "--endpoints", "b:2,c:3"},
			want: Config{Endpoints: []string{"a:1", "b:2", "c:3"}}, fields: []string{"Endpoints"}},
		{name: "node with a bad scheme", args: []string{"-node", "ftp://a:1"}, err: `etcd endpoint "ftp://a:1": scheme "ftp"`},
		{name: "empty node", args: []string{"-node", ","}, err: "-node"},
		{name: "interval in seconds", args: []string{"-interval", "60"}, want: Config{Interval: time.Minute}, fields: []string{"Interval"}},
		{name: "interval as a duration", args: []string{"--interval", "90s"}, want: Config{Interval: 90 * time.Second}, fields: []string{"Interval"}},
		{name: "interval 0", args: []string{"-interval=0"}, want: Config{Interval: 0}, fields: []string{"Interval"}},
		{name: "interval negative", args: []string{"-interval", "-5"}, err: "--interval -5s: negative"},
		{name: "interval word", args: []string{"-interval", "often"}, err: "want seconds (60) or a duration (1m)"},
		{name: "interval too large", args: []string{"-interval", "99999999999999"}, err: "too large"},
		{name: "watch", args: []string{"-watch"}, want: Config{Onetime: false}, fields: []string{"Onetime"}},
		{name: "onetime noop prefix log-level", args: []string{"-onetime", "-noop", "-prefix", "/production", "-log-level", "debug"},
			want: Config{Onetime: true, Noop: true, Prefix: "/production", LogLevel: "debug"}, fields: []string{"Onetime", "Noop", "Prefix", "LogLevel"}},
		{name: "log-level panic", args: []string{"-log-level", "panic"}, want: Config{LogLevel: "panic"}, fields: []string{"LogLevel"}},
		{name: "log-level fatal", args: []string{"-log-level", "fatal"}, want: Config{LogLevel: "fatal"}, fields: []string{"LogLevel"}},
		{name: "sync-only", args: []string{"-sync-only"}, want: Config{SyncOnly: true}, fields: []string{"SyncOnly"}},
		{name: "keep-stage-file", args: []string{"-keep-stage-file"}, warn: "-keep-stage-file: accepted"},
		{name: "keep-stage-file=false", args: []string{"-keep-stage-file=false"}},
		{name: "client TLS", args: []string{"-client-cert", "c.pem", "-client-key", "k.pem", "-client-ca-keys", "ca.pem"},
			want: Config{Cert: "c.pem", Key: "k.pem", CACert: "ca.pem"}, fields: []string{"Cert", "Key", "CACert"}},
		{name: "client cert without key", args: []string{"-client-cert", "c.pem"}, err: "-client-cert and -client-key"},
		{name: "username password basic-auth", args: []string{"-basic-auth", "-username", "root", "-password", "pw"},
			want: Config{User: "root", Password: "pw"}, fields: []string{"User", "Password"}},
		{name: "srv-domain", args: []string{"-srv-domain", "example.com"},
			want: Config{SRVRecord: "_etcd._tcp.example.com.", SRVScheme: "http"}, fields: []string{"SRVRecord", "SRVScheme"}},
		{name: "srv-domain etcdv3 https", args: []string{"-backend", "etcdv3", "-srv-domain", "example.com", "-scheme", "https"},
			want: Config{SRVRecord: "_etcdv3._tcp.example.com.", SRVScheme: ""}, fields: []string{"SRVRecord", "SRVScheme"}},
		{name: "srv-domain etcd https", args: []string{"-backend", "etcd", "-srv-domain", "example.com", "-scheme", "https"},
			want: Config{SRVRecord: "_etcd._tcp.example.com.", SRVScheme: "https"}, fields: []string{"SRVRecord", "SRVScheme"}},
		{name: "srv-record wins", args: []string{"-srv-domain", "example.com", "-srv-record", "_etcd-client._tcp.example.com"},
			want: Config{SRVRecord: "_etcd-client._tcp.example.com"}, fields: []string{"SRVRecord"}},
		{name: "scheme alone", args: []string{"-scheme", "https"}, want: Config{Endpoints: []string{DefaultEndpoint}, SRVRecord: ""},
			fields: []string{"Endpoints", "SRVRecord"}},
		{name: "bad scheme", args: []string{"-scheme", "gopher"}, err: `scheme "gopher": want http or https`},
		{name: "version", args: []string{"-version", "-backend", "consul"}, want: Config{PrintVersion: true}, fields: []string{"PrintVersion"}},
		{name: "unknown flag", args: []string{"-sync-first"}, err: "flag provided but not defined: -sync-first"},
		{name: "secret-keyring", args: []string{"-secret-keyring", "k"}, err: "-secret-keyring: not supported: confd's PGP functions"},
		{name: "client-insecure", args: []string{"-client-insecure"}, err: "-client-insecure: not supported"},

		{name: "table", args: []string{"-table", "t"}, err: "-table: a flag of confd's dynamodb backend; the renderer reads etcd only"},
		{name: "separator", args: []string{"-separator", "_"}, err: "-separator: a flag of confd's redis backend"},
		{name: "file", args: []string{"-file", "x.yaml"}, err: "-file: a flag of confd's file backend"},
		{name: "filter", args: []string{"-filter", "*.yml"}, err: "-filter: a flag of confd's file backend"},
		{name: "app-id", args: []string{"-app-id", "a"}, err: "-app-id: a flag of confd's vault backend"},
		{name: "user-id", args: []string{"-user-id", "a"}, err: "-user-id: a flag of confd's vault backend"},
		{name: "auth-token", args: []string{"-auth-token", "a"}, err: "-auth-token: a flag of confd's vault/consul backend"},
		{name: "auth-type", args: []string{"-auth-type", "app-id"}, err: "-auth-type: a flag of confd's vault backend"},
		{name: "role-id", args: []string{"-role-id", "r"}, err: "-role-id: a flag of confd's vault backend"},
		{name: "secret-id", args: []string{"-secret-id", "s"}, err: "-secret-id: a flag of confd's vault backend"},
		{name: "path", args: []string{"-path", "p"}, err: "-path: a flag of confd's vault backend"},

		// Precedence: flags, then environment, then the file.
		{name: "node beats env beats file", args: []string{"-node", "f:1"}, env: map[string]string{"ETCD_ENDPOINTS": "e:1"},
			file: "nodes = [\"n:1\"]\n", want: Config{Endpoints: []string{"f:1"}}, fields: []string{"Endpoints"}},
		{name: "client cert: flag beats env", args: []string{"-client-cert", "f.pem", "-client-key", "fk.pem"},
			env:  map[string]string{"CONFD_CLIENT_CERT": "e.pem", "CONFD_CLIENT_KEY": "ek.pem", "CONFD_CLIENT_CAKEYS": "eca.pem"},
			file: "client_cert = \"c.pem\"\nclient_key = \"k.pem\"\nclient_cakeys = \"ca.pem\"\n",
			want: Config{Cert: "f.pem", Key: "fk.pem", CACert: "eca.pem"}, fields: []string{"Cert", "Key", "CACert"}},
		{name: "client cert: env beats file", env: map[string]string{"CONFD_CLIENT_CERT": "e.pem", "CONFD_CLIENT_KEY": "ek.pem"},
			file: "client_cert = \"c.pem\"\nclient_key = \"k.pem\"\nclient_cakeys = \"ca.pem\"\n",
			want: Config{Cert: "e.pem", Key: "ek.pem", CACert: "ca.pem"}, fields: []string{"Cert", "Key", "CACert"}},
		{name: "password: flag beats env beats file", args: []string{"-password", "f"}, env: map[string]string{"ETCD_PASSWORD": "e"},
			file: "password = \"p\"\n", want: Config{Password: "f"}, fields: []string{"Password"}},
		{name: "password: env beats file", env: map[string]string{"ETCD_PASSWORD": "e"},
			file: "password = \"p\"\n", want: Config{Password: "e"}, fields: []string{"Password"}},
		{name: "username flag beats file", args: []string{"-username", "f"}, file: "username = \"u\"\n",
			want: Config{User: "f"}, fields: []string{"User"}},
		{name: "backend flag beats file", args: []string{"-backend", "etcdv3", "-srv-domain", "x.org"}, file: "backend = \"consul\"\n",
			want: Config{SRVRecord: "_etcdv3._tcp.x.org."}, fields: []string{"SRVRecord"}},
		{name: "interval flag beats file", args: []string{"-interval", "5"}, file: "interval = 600\n",
			want: Config{Interval: 5 * time.Second}, fields: []string{"Interval"}},
		{name: "sync-only flag beats file", args: []string{"-sync-only=false"}, file: "sync-only = true\n",
			want: Config{SyncOnly: false}, fields: []string{"SyncOnly"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, ok := parseIn(t, tc.file, tc.args, tc.env, tc.err)
			if !ok {
				return
			}
			if d := same(c, tc.want, tc.fields...); d != "" {
				t.Errorf("ParseArgs(%q): %s", tc.args, d)
			}
			if w := strings.Join(c.Warnings, "\n"); (tc.warn == "") != (w == "") || !strings.Contains(w, tc.warn) {
				t.Errorf("ParseArgs(%q) warnings %q; want %q", tc.args, c.Warnings, tc.warn)
			}
		})
	}
}

// TestParseArgsConfdToml: confd.toml's keys, with confd's names and
// meaning; keys confd ignores (or reads for other backends) load with a
// warning naming the file and key.
func TestParseArgsConfdToml(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		file   string
		want   Config
		fields []string
		warn   []string
		err    string
	}{
		{name: "the documented example", file: `
backend = "etcdv3"
client_cert = "/etc/confd/ssl/client.crt"
client_key = "/etc/confd/ssl/client.key"
client_cakeys = "/etc/confd/ssl/ca.crt"
log-level = "debug"
interval = 600
nodes = ["http://127.0.0.1:2379"]
noop = false
prefix = "/production"
scheme = "https"
watch = true
`, want: Config{Cert: "/etc/confd/ssl/client.crt", Key: "/etc/confd/ssl/client.key", CACert: "/etc/confd/ssl/ca.crt", LogLevel: "debug",
			Interval: 600 * time.Second, Endpoints: []string{"http://127.0.0.1:2379"}, Prefix: "/production"},
			fields: []string{"Cert", "Key", "CACert", "LogLevel", "Interval", "Endpoints", "Prefix", "Noop"}},
		{name: "srv_domain with etcd and scheme", file: "backend = \"etcd\"\nsrv_domain = \"example.com\"\nscheme = \"https\"\n",
			want: Config{SRVRecord: "_etcd._tcp.example.com.", SRVScheme: "https"}, fields: []string{"SRVRecord", "SRVScheme"}},
		{name: "srv_record", file: "srv_record = \"_etcd-client._tcp.example.com.\"\n",
			want: Config{SRVRecord: "_etcd-client._tcp.example.com."}, fields: []string{"SRVRecord"}},
		{name: "basic_auth username password", file: "basic_auth = true\nusername = \"u\"\npassword = \"p\"\n",
			want: Config{User: "u", Password: "p"}, fields: []string{"User", "Password"}},
		{name: "sync-only onetime", file: "sync-only = true\nonetime = true\n", want: Config{SyncOnly: true, Onetime: true},
			fields: []string{"SyncOnly", "Onetime"}},
		{name: "scheme alone leaves nodes as written", file: "nodes = [\"n1:2379\"]\nscheme = \"https\"\n",
			want: Config{Endpoints: []string{"n1:2379"}}, fields: []string{"Endpoints"}},
		{name: "other backends' keys", file: "backend = \"etcdv3\"\ntable = \"t\"\nauth_type = \"app-id\"\n",
			warn: []string{`key "auth_type" is for confd's vault backend: ignored`, `key "table" is for confd's dynamodb backend: ignored`}},
		{name: "unknown key and table", file: "colour = \"blue\"\n[extra]\na = 1\n",
			warn: []string{`unknown key "colour" ignored`, `unknown key "extra" ignored`, `unknown key "extra.a" ignored`}},
		{name: "backend consul", file: "backend = \"consul\"\n", err: `backend "consul": not supported`},
		{name: "bad scheme", file: "scheme = \"ftp\"\n", err: `scheme "ftp"`},
		{name: "interval as string", file: "interval = \"60\"\n", err: "renderer.toml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, ok := parseIn(t, tc.file, nil, nil, tc.err)
			if !ok {
				return
			}
			p := filepath.Join(c.ConfDir, "renderer.toml")
			if d := same(c, tc.want, tc.fields...); d != "" {
				t.Error(d)
			}
			slices.Sort(c.Warnings)
			if len(c.Warnings) != len(tc.warn) {
				t.Fatalf("warnings %q; want %d", c.Warnings, len(tc.warn))
			}
			for i, w := range tc.warn {
				if !strings.Contains(c.Warnings[i], w) || !strings.Contains(c.Warnings[i], p) {
					t.Errorf("warning %q; want it to name %s and contain %q", c.Warnings[i], p, w)
				}
			}
		})
	}
}

// TestParseArgsConfigFiles: which file is read. --config must exist;
// confd's -config-file may be missing (confd skips it); without either,
// <confdir>/renderer.toml, else <confdir>/confd.toml.
func TestParseArgsConfigFiles(t *testing.T) {
	t.Parallel()
	env := func(string) string { return "" }
	dir := t.TempDir()
	confdToml := filepath.Join(dir, "confd.toml")
	if err := os.WriteFile(confdToml, []byte("prefix = \"/from-confd\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := ParseArgs([]string{"-confdir", dir}, env)
	if err != nil || c.Prefix != "/from-confd" {
		t.Errorf("confdir with confd.toml only: prefix %q, %v; want /from-confd", c.Prefix, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "renderer.toml"), []byte("prefix = \"/from-renderer\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err = ParseArgs([]string{"-confdir", dir}, env)
	if err != nil || c.Prefix != "/from-renderer" {
		t.Errorf("confdir with both: prefix %q, %v; want /from-renderer", c.Prefix, err)
	}
	c, err = ParseArgs([]string{"-confdir", dir, "-config-file", confdToml}, env)
	if err != nil || c.Prefix != "/from-confd" {
		t.Errorf("-config-file confd.toml: prefix %q, %v; want /from-confd", c.Prefix, err)
	}
	missing := filepath.Join(dir, "nope.toml")
	c, err = ParseArgs([]string{"-confdir", dir, "-config-file", missing}, env)
	if err != nil || c.Prefix != "" || len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], missing) {
		t.Errorf("-config-file missing: prefix %q, warnings %q, %v; want it skipped with a warning", c.Prefix, c.Warnings, err)
	}
	if _, err := ParseArgs([]string{"-confdir", dir, "--config", missing}, env); err == nil {
		t.Error("--config missing: no error; want one")
	}
}

type srvStub map[string][]*net.SRV

func (s srvStub) LookupSRV(_ context.Context, _, _, name string) (string, []*net.SRV, error) {
	if a, ok := s[name]; ok {
		return name, a, nil
	}
	return "", nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

// TestResolveSRV: -srv-domain finds the etcd members through DNS SRV as
// confd does (its record name; the scheme for -backend etcd only).
func TestResolveSRV(t *testing.T) {
	t.Parallel()
	dns := srvStub{
		"_etcd._tcp.example.com.":   {{Target: "e1.example.com.", Port: 2379}, {Target: "e2.example.com.", Port: 2379}},
		"_etcdv3._tcp.example.com.": {{Target: "v3.example.com.", Port: 2379}},
	}
	for _, tc := range []struct {
		args []string
		want []string
		err  string
	}{
		{[]string{"-srv-domain", "example.com", "-node", "ignored:1"}, []string{"http://e1.example.com:2379", "http://e2.example.com:2379"}, ""},
		{[]string{"-srv-domain", "example.com", "-scheme", "https"}, []string{"https://e1.example.com:2379", "https://e2.example.com:2379"}, ""},
		{[]string{"-backend", "etcdv3", "-srv-domain", "example.com", "-scheme", "https"}, []string{"v3.example.com:2379"}, ""},
		{[]string{"-backend", "etcdv3", "-srv-record", "_etcd._tcp.example.com."}, []string{"e1.example.com:2379", "e2.example.com:2379"}, ""},
		{[]string{"-node", "n:1"}, []string{"n:1"}, ""},
		{[]string{"-srv-domain", "nowhere.example"}, nil, "_etcd._tcp.nowhere.example."},
	} {
		c, err := ParseArgs(append([]string{"-confdir", t.TempDir()}, tc.args...), func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		err = c.ResolveSRV(context.Background(), dns)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: ResolveSRV = %v; want an error naming %s", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(c.Endpoints, tc.want) {
			t.Errorf("%q: endpoints %q, %v; want %q", tc.args, c.Endpoints, err, tc.want)
		}
	}
}

// TestParseArgsConfdDefaultConfdir: a confd command line without -confdir
// gets confd's default confdir (and so /etc/confd/confd.toml); rollcall's
// command line keeps /etc/rollcall.
func TestParseArgsConfdDefaultConfdir(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-watch", "-backend", "etcdv3", "-node", "http://127.0.0.1:2379"}, "/etc/confd"},
		{[]string{"-onetime", "-node", "http://127.0.0.1:2379"}, "/etc/confd"},
		{[]string{"-backend", "etcdv3", "-confdir", "/srv/confd"}, "/srv/confd"},
		{[]string{"--endpoints", "127.0.0.1:2379", "--onetime"}, "/etc/rollcall"},
		{[]string{"-onetime", "-interval", "60", "-prefix", "/p"}, "/etc/rollcall"},
	} {
		c, err := ParseArgs(tc.args, func(string) string { return "" })
		if err != nil {
			if _, statErr := os.Stat(tc.want); statErr == nil {
				t.Skipf("%s exists on this machine: its config file would be read (%v)", tc.want, err)
			}
			t.Fatalf("ParseArgs(%q) = %v", tc.args, err)
		}
		if c.ConfDir != tc.want {
			t.Errorf("ParseArgs(%q) confdir = %q; want %q", tc.args, c.ConfDir, tc.want)
		}
	}
}
