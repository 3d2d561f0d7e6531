// Command renderer keeps nginx (or anything) configured from etcd with
// confd-compatible template resources. See renderer/README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/rollcall/rollcall/cli"
	"github.com/rollcall/rollcall/renderer"
)

// srvTimeout bounds the DNS SRV lookup of -srv-domain / -srv-record.
const srvTimeout = 10 * time.Second

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// version is the module version the binary was built from, or its VCS
// revision for a build from a checkout.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && (v == "" || v == "(devel)") {
			v = s.Value
		}
	}
	return v
}

// run returns the exit status: 0, 1 on a runtime error or a failed
// --onetime, 2 on a usage error.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := renderer.ParseArgs(args, getenv)
	if err != nil {
		fmt.Fprintln(stderr, "renderer:", err)
		return 2
	}
	if cfg.PrintVersion {
		fmt.Fprintln(stdout, "renderer (rollcall)", version())
		return 0
	}
	level, err := cli.ParseLevel(cfg.LogLevel)
	if err != nil { // ParseArgs validated it
		fmt.Fprintln(stderr, "renderer: --log-level:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sctx, cancel := context.WithTimeout(ctx, srvTimeout)
	err = cfg.ResolveSRV(sctx, net.DefaultResolver)
	cancel()
	if err != nil {
		log.Error("renderer stopped", "err", err)
		return 1
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg.Reload = hup
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	err = renderer.Run(ctx, cfg, log, reg)
	var ue *cli.UsageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "renderer:", err)
		return 2
	default:
		log.Error("renderer stopped", "err", err)
		return 1
	}
}
