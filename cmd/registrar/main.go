// Command registrar is the entrypoint wrapper of an app container: it picks
// a port, starts the app, registers it in etcd once ready and drains it from
// the gateways before stopping it. See registrar/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"

	"github.com/rollcall/rollcall/cli"
	"github.com/rollcall/rollcall/registrar"
)

func main() {
	cfg, err := registrar.ParseArgs(os.Args[1:], os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		registrar.Usage(os.Stdout)
		os.Exit(0)
	}
	var level slog.Level
	if err == nil {
		level, err = cli.ParseLevel(cfg.LogLevel) // ParseArgs checked it
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "registrar: %v (see --help)\n", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	code, err := registrar.Run(context.Background(), cfg, log)
	var ue *cli.UsageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "registrar: %v\n", err)
		code = 2
	case err != nil:
		log.Error("registrar", "err", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}
