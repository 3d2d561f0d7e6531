package renderer

import (
	"errors"
	"strings"
	"testing"

	"github.com/rollcall/rollcall/cli"
)

// FuzzParseArgs: any command line (arguments separated by NUL) gives a
// valid Config or a one-line *cli.UsageError, never a panic. The seed corpus
// (testdata/fuzz/FuzzParseArgs) holds confd's and rollcall's command lines.
func FuzzParseArgs(f *testing.F) {
	f.Add("-onetime\x00-backend\x00etcdv3\x00-node\x00http://127.0.0.1:2379")
	f.Add("--endpoints\x00a:1,b:2\x00--wait\x002s:10s\x00--interval\x0060")
	f.Fuzz(func(t *testing.T, line string) {
		args := strings.Split(line, "\x00")
		for _, a := range args {
			// A config file could be any path (/dev/zero); the file
			// parsing has its own tests.
			if strings.Contains(a, "config") {
				t.Skip()
			}
		}
		dir := t.TempDir()
		c, err := ParseArgs(append([]string{"-confdir", dir}, args...), func(string) string { return "" })
		if err != nil {
			var ue *cli.UsageError
			if !errors.As(err, &ue) {
				t.Fatalf("ParseArgs(%q) = %T %v; want *cli.UsageError", args, err, err)
			}
			if strings.Contains(err.Error(), "\n") && !strings.HasPrefix(err.Error(), "usage: ") {
				t.Fatalf("ParseArgs(%q) error %q: want one line", args, err)
			}
			return
		}
		if c.PrintVersion {
			return
		}
		if len(c.Endpoints) == 0 || c.Interval < 0 || c.Cooldown < 0 || c.ID == "" {
			t.Fatalf("ParseArgs(%q) = %+v: endpoints, interval, cooldown or id not valid", args, c)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("ParseArgs(%q) passed but Validate() = %v", args, err)
		}
	})
}
