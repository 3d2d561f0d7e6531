// Command nginx-reload reloads nginx and exits 0 only when the master applied
// the new configuration (a new generation of workers started). `nginx -s
// reload` alone exits 0 even when nginx keeps the old configuration.
//
//	nginx-reload [--nginx nginx] [--pid /run/nginx.pid] [--timeout 10s]
//	             [--error-log FILE] [--signal] [-- NGINX-ARGS...]
//
// NGINX-ARGS (e.g. -p PREFIX -c CONF) go before "-s reload". Exit status: 0
// applied, 1 not applied or not sent, 2 usage error.
package main

import (
	"context"
	"fmt"
	"io"
	"os/exec"

	"github.com/rollcall/rollcall/internal/nginxconf"
	"github.com/rollcall/rollcall/internal/reloadcmd"
	"github.com/rollcall/rollcall/nginxreload"
)

func main() { reloadcmd.Main(run) }

func run(ctx context.Context, args []string, stderr io.Writer) int {
	return reloadcmd.Run(ctx, "nginx-reload", args, stderr, parse, func(ctx context.Context, c nginxreload.Config) error {
		res, err := nginxreload.Reload(ctx, c)
		if err == nil && res.QuitErr != nil { // applied; nginx quits them itself 100 ms later
			fmt.Fprintf(stderr, "nginx-reload: warning: %v\n", res.QuitErr)
		}
		return err
	})
}

func parse(args []string, stderr io.Writer) (nginxreload.Config, error) {
	fs := reloadcmd.FlagSet("nginx-reload", "[flags] [-- NGINX-ARGS...]", stderr)
	var c nginxreload.Config
	fs.StringVar(&c.Nginx, "nginx", "nginx", "nginx binary, run as NGINX NGINX-ARGS -s reload")
	fs.StringVar(&c.PIDFile, "pid", nginxreload.DefaultPIDFile, "the nginx master's pid file")
	fs.DurationVar(&c.Timeout, "timeout", nginxreload.DefaultTimeout, "how long to wait for the new workers")
	fs.StringVar(&c.ErrorLog, "error-log", "", "nginx error log: [emerg] lines after the reload end the wait and are quoted")
	signal := fs.Bool("signal", false, "send SIGHUP to the master instead of running nginx -s reload")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		c.Args = fs.Args()
	}
	switch {
	case c.Timeout <= 0:
		return c, fmt.Errorf("--timeout must be positive, got %v", c.Timeout)
	case *signal && len(c.Args) > 0:
		return c, fmt.Errorf("--signal takes no nginx arguments, got %q", c.Args)
	case *signal:
		c.Nginx = ""
	default:
		bin, err := lookNginx(c.Nginx)
		if err != nil {
			return c, err
		}
		c.Nginx = bin
	}
	return c, nil
}

// lookNginx resolves the nginx binary; plain "nginx" is also looked for
// where Debian installs it (users' PATH often lacks /usr/sbin).
func lookNginx(name string) (string, error) {
	lookup := func() (string, error) { return exec.LookPath(name) }
	if name == "nginx" {
		lookup = nginxconf.Lookup
	}
	bin, err := lookup()
	if err != nil {
		return "", fmt.Errorf("--nginx: %w", err)
	}
	return bin, nil
}
