// Command renderer keeps nginx (or anything) configured from etcd with
// confd-compatible template resources. See renderer/README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/rollcall/rollcall/renderer"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
}

// run returns the exit status: 0, 1 on a runtime error or a failed
// --onetime, 2 on a usage error.
func run(args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := renderer.ParseArgs(args, getenv)
	if err != nil {
		fmt.Fprintln(stderr, "renderer:", err)
		return 2
	}
	var level slog.Level
	switch strings.ToLower(cfg.LogLevel) {
	case "debug":
		level = slog.LevelDebug
	case "warn", "warning":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg.Reload = hup
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	err = renderer.Run(ctx, cfg, log, reg)
	var ue *renderer.UsageError
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
