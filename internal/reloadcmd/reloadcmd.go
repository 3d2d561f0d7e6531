// Package reloadcmd is the shape the reload commands (cmd/nginx-reload,
// cmd/haproxy-reload) share: SIGINT/SIGTERM cancel the wait, flags parse
// into the command's config, one confirmed reload, and one exit status:
// 0 applied (or --help), 1 not applied or not sent, 2 usage error.
package reloadcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Main is a reload command's main: run under a context that SIGINT and
// SIGTERM cancel, then exit with its status.
func Main(run func(ctx context.Context, args []string, stderr io.Writer) int) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

// Run parses args with parse, then calls reload; errors are printed to
// stderr after name. It returns the exit status.
func Run[C any](ctx context.Context, name string, args []string, stderr io.Writer,
	parse func([]string, io.Writer) (C, error), reload func(context.Context, C) error) int {
	c, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	if err := reload(ctx, c); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	return 0
}

// FlagSet is a flag set for command name that reports to stderr and
// prints "usage: name usage" and the flags for --help.
func FlagSet(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: %s %s\n", name, usage)
		fs.PrintDefaults()
	}
	return fs
}
