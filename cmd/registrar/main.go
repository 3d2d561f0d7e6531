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

	"github.com/rollcall/rollcall/registrar"
)

func main() {
	o, err := parse(os.Args[1:], os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		usage(os.Stdout)
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "registrar: %v (see --help)\n", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: o.level}))
	code, err := registrar.Run(context.Background(), o.cfg, log)
	var ue *registrar.UsageError
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
