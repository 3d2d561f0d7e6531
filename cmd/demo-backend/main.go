// Command demo-backend is rollcall's own small HTTP backend for the demo and
// the rolling-deploy tests. It listens on $HOST_IP:$PORT (as registrar sets
// them), answers every request with its address, and on SIGTERM or SIGINT
// stops listening at once — like an app that does not drain by itself — so a
// gateway that still routes to it sees the failure.
//
//	PORT=8080 HOST_IP=127.0.0.1 demo-backend [--report FILE]
//
// Every response body is "<ip>:<port>\n" and carries the header
// X-Backend: <ip>:<port>. With --report (env DEMO_BACKEND_REPORT) it writes a
// JSON Report when it exits, so a test can prove which requests it served.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// Report is what --report FILE holds after exit.
type Report struct {
	Addr          string    `json:"addr"`
	Served        int64     `json:"served"`
	First         time.Time `json:"first,omitzero"`
	Last          time.Time `json:"last,omitzero"`
	SignalAt      time.Time `json:"signal_at,omitzero"`
	AfterSignal   int64     `json:"after_signal"` // requests that arrived after SIGTERM
	ListenerClose time.Time `json:"listener_closed,omitzero"`
}

// counter records served requests under one lock.
type counter struct {
	mu sync.Mutex
	r  Report
}

func (c *counter) served(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.r.Served++
	if c.r.First.IsZero() {
		c.r.First = now
	}
	c.r.Last = now
	if !c.r.SignalAt.IsZero() && now.After(c.r.SignalAt) {
		c.r.AfterSignal++
	}
}

func (c *counter) signalled(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.r.SignalAt = now
}

func (c *counter) report() Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.r
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "demo-backend")
	if err := run(os.Args[1:], log); err != nil {
		log.Error("exit", "err", err)
		os.Exit(1)
	}
}

func run(args []string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "demo-backend")
	}
	fs := flag.NewFlagSet("demo-backend", flag.ContinueOnError)
	listen := fs.String("listen", net.JoinHostPort(envOr("HOST_IP", "127.0.0.1"), os.Getenv("PORT")),
		"address to listen on (default $HOST_IP:$PORT)")
	reportPath := fs.String("report", os.Getenv("DEMO_BACKEND_REPORT"), "write a JSON report here on exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, port, err := net.SplitHostPort(*listen); err != nil || port == "" {
		return errors.New("no port: set $PORT or --listen")
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	c := &counter{r: Report{Addr: addr}}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			c.served(time.Now())
			w.Header().Set("X-Backend", addr)
			fmt.Fprintln(w, addr)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("serving", "addr", addr, "pid", os.Getpid())

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	c.signalled(time.Now())
	log.Info("signal: closing listener", "addr", addr)
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx) // closes the listener now, waits for requests in flight
	r := c.report()
	r.ListenerClose = time.Now()
	log.Info("stopped", "addr", addr, "served", r.Served, "after_signal", r.AfterSignal)
	if *reportPath != "" {
		if werr := writeReport(*reportPath, r); werr != nil {
			return errors.Join(err, werr)
		}
	}
	return err
}

func writeReport(path string, r Report) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return os.Rename(tmp, path)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
