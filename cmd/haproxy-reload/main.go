// Command haproxy-reload reloads HAProxy through its master CLI and exits 0
// only when a new worker generation runs the new configuration (`show
// proc`). A reload the master dropped (sent while it was re-executing) is
// sent again; one it refused (the configuration failed to load or apply)
// exits 1.
//
//	haproxy-reload [--master-socket /run/haproxy-master.sock] [--timeout 10s] [--resend 2s]
//
// Exit status: 0 applied, 1 not applied or not sent, 2 usage error.
package main

import (
	"context"
	"fmt"
	"io"

	"github.com/rollcall/rollcall/internal/reloadcmd"
	"github.com/rollcall/rollcall/nginxreload"
)

func main() { reloadcmd.Main(run) }

func run(ctx context.Context, args []string, stderr io.Writer) int {
	return reloadcmd.Run(ctx, "haproxy-reload", args, stderr, parse, func(ctx context.Context, c nginxreload.HAProxyConfig) error {
		res, err := nginxreload.ReloadHAProxy(ctx, c)
		if err == nil && res.Sent > 1 {
			fmt.Fprintf(stderr, "haproxy-reload: applied after %d reloads (the master dropped %d) in %v\n", res.Sent, res.Sent-1, res.Took)
		}
		return err
	})
}

func parse(args []string, stderr io.Writer) (nginxreload.HAProxyConfig, error) {
	fs := reloadcmd.FlagSet("haproxy-reload", "[flags]", stderr)
	var c nginxreload.HAProxyConfig
	fs.StringVar(&c.MasterSocket, "master-socket", nginxreload.DefaultMasterSocket, "HAProxy's master CLI socket (haproxy -S)")
	fs.DurationVar(&c.Timeout, "timeout", nginxreload.DefaultTimeout, "how long to wait for the new workers")
	fs.DurationVar(&c.Resend, "resend", nginxreload.DefaultResend, "send the reload again when the master has not started it within this")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	case c.Timeout <= 0:
		return c, fmt.Errorf("--timeout must be positive, got %v", c.Timeout)
	case c.Resend <= 0:
		return c, fmt.Errorf("--resend must be positive, got %v", c.Resend)
	}
	return c, nil
}
