package registrar

import (
	"errors"
	"flag"
	"strings"
	"testing"

	"github.com/rollcall/rollcall/cli"
	"github.com/rollcall/rollcall/registry"
)

// FuzzParse: the registrar's flags and environment, whatever they hold
// (args are split at NUL; env is NAME=value lines). ParseArgs never
// panics, refuses with a usage error (exit 2) or help, and what it accepts
// is a valid config: app and env names that can carry no syntax into a key, a
// command to run, and an address key that registry parses back.
func FuzzParse(f *testing.F) {
	for _, seed := range [][2]string{
		{"--app\x00search\x00--env\x00PRE\x00--\x00java", ""},
		{"--app\x00a;b\x00--env\x00PRE\x00--\x00x", ""},
		{"--env\x00PRE\x00--\x00x", "REGISTRAR_APP=web"},
		{"--app\x00web\x00--env\x00prod\x00--ip\x00::1\x00--port\x0080\x00--\x00x", ""},
		{"--app\x00web\x00--env\x00prod\x00--port-range\x0030000-20000\x00--\x00x", ""},
		{"--app\x00web\x00--env\x00prod\x00--ttl\x001ms\x00--\x00x", "REGISTRAR_PORT_ENV=1X"},
		{"--app\x00web\x00--env\x00prod\x00--check\x00http://{{.IP}}:{{.Port}}/h\x00--\x00x", "ETCD_ENDPOINTS=a:1,,b:2"},
		{"-h", ""},
		{"--app=web\x00--env=x_y\x00--\x00x", ""},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, args, env string) {
		vars := map[string]string{}
		for line := range strings.Lines(env) {
			k, v, _ := strings.Cut(strings.TrimSuffix(line, "\n"), "=")
			vars[k] = v
		}
		var argv []string
		if args != "" {
			argv = strings.Split(args, "\x00")
		}
		c, err := ParseArgs(argv, func(k string) string { return vars[k] })
		var ue *cli.UsageError
		switch {
		case errors.Is(err, flag.ErrHelp), errors.As(err, &ue):
			return
		case err != nil:
			t.Fatalf("ParseArgs(%q, %q): %v is no usage error", argv, env, err)
		}
		if registry.ValidName(c.App) != nil || registry.ValidName(c.Env) != nil || len(c.Command) == 0 {
			t.Fatalf("ParseArgs(%q, %q) accepted app %q env %q command %q", argv, env, c.App, c.Env, c.Command)
		}
		if _, _, err := registry.ParseService(registry.Service(c.App, c.Env)); err != nil {
			t.Fatalf("ParseArgs(%q, %q): service %v", argv, env, err)
		}
	})
}
