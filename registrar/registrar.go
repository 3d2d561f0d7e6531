package registrar

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/cli"
	"github.com/rollcall/rollcall/registry"
)

// stopSignals start the shutdown; forwardSignals are passed to the app.
var (
	stopSignals    = []os.Signal{syscall.SIGTERM, syscall.SIGINT}
	forwardSignals = []os.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGQUIT, syscall.SIGWINCH}
)

// Run runs the app under cfg until it exits or a SIGTERM/SIGINT (or ctx)
// stops it, and returns the exit code the registrar should exit with: the
// app's (128+N when signal N killed it), 126/127 when it cannot start. A
// *cli.UsageError means a bad cfg (exit 2). Run catches SIGTERM, SIGINT and the
// forwarded signals itself; as PID 1 it also reaps every zombie.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (int, error) {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, append(stopSignals, forwardSignals...)...)
	defer signal.Stop(sigs)
	return run(ctx, cfg, log, sigs, os.Getpid() == 1)
}

// run is Run with the signal source and the reaping mode given (tests). It
// reads as the lifecycle: pick → start → ready and lease → wait → drain →
// stop; each stage owns its goroutines.
func run(ctx context.Context, cfg Config, log *slog.Logger, sigs <-chan os.Signal, reapAll bool) (int, error) {
	base := log // stages get their own "component", not a second one
	log = base.With("component", "registrar")
	cfg, spec, etcdCfg, err := prepare(cfg)
	if err != nil {
		return 2, err
	}
	etcd := &conn{cfg: etcdCfg}
	defer func() {
		if err := etcd.close(); err != nil {
			log.Debug("etcd client", "err", err)
		}
	}()
	port, lease, err := choosePort(ctx, cfg, etcd, log)
	if err != nil {
		return 1, err
	}
	addr := netip.AddrPortFrom(cfg.IP, port)
	chk, err := spec.probe(addr)
	if err != nil { // parseCheck expanded a sample address: not expected
		return 2, cli.Usagef("--check: %v", err) // the pick's lease expires by itself
	}
	k := newKeeper(etcd, keeperConfig{
		Key: registry.Key(cfg.Prefix, cfg.App, cfg.Env, addr), Value: registry.Value(addr),
		ClaimKey: registry.PortClaimKey(cfg.Prefix, cfg.IP, port), ClaimValue: registry.Service(cfg.App, cfg.Env),
		Lease: lease, TTL: cfg.TTL, OpTimeout: cfg.DialTimeout,
	}, base.With("component", "lease"))

	var wg sync.WaitGroup // the app's thread, the reaper, the signal router
	defer wg.Wait()
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, syscall.SIGCHLD)
	defer signal.Stop(sigchld)
	env := childEnv(os.Environ(), cfg.PortEnv, cfg.IP.String(), port)
	child, err := startChild(&wg, cfg.Command, env, base.With("component", "child"))
	if err != nil {
		if _, rerr := k.revoke(ctx); rerr != nil {
			log.Warn("revoke the port claim: it expires with its lease", "err", rerr)
		}
		return startCode(err), err
	}
	log.Info("instance", "key", k.key, "value", k.value, "pid", child.Pid())
	bg, end := context.WithCancel(context.WithoutCancel(ctx)) // until Run returns
	defer end()
	drainCtx, hurry := context.WithCancel(bg) // ends on a second signal or the app's exit
	defer hurry()
	stop := make(chan os.Signal, 1)
	wg.Go(func() { reap(bg, child, reapAll, sigchld) })
	wg.Go(func() { routeSignals(bg, sigs, child, stop, hurry, log) })
	ros := newRoster(etcd, k.key, base.With("component", "drain"))
	wg.Go(func() { ros.Run(bg, cfg.TTL) })

	appExited := keepRegistered(ctx, k, health{chk, cfg.Check, cfg.CheckInterval, addr}, stop, child, log)
	drain(drainCtx, cfg, k, etcd, ros, appExited, base)
	return child.Stop(cfg.StopTimeout).ExitCode(), nil
}

// prepare validates cfg, fills in the advertised IP, and parses the check
// and the etcd client config; every error is a *cli.UsageError.
func prepare(cfg Config) (Config, checkSpec, clientv3.Config, error) {
	if err := cfg.Validate(); err != nil {
		return cfg, checkSpec{}, clientv3.Config{}, err
	}
	if !cfg.IP.IsValid() {
		ip, err := primaryIPv4()
		if err != nil {
			return cfg, checkSpec{}, clientv3.Config{}, &cli.UsageError{Err: err}
		}
		cfg.IP = ip
	}
	cs, err := parseCheck(cfg.Check)
	if err != nil { // Validate parsed it already
		return cfg, cs, clientv3.Config{}, cli.Usagef("--check: %v", err)
	}
	cc, err := clientConfig(cfg, retryCap(cfg.TTL))
	return cfg, cs, cc, err
}

// health is the app's readiness and health check at its address.
type health struct {
	chk      check
	text     string // --check, for the log
	interval time.Duration
	addr     netip.AddrPort
}

// keepRegistered runs the registration — wait until the app is ready, then
// keep the key on a live lease while it stays healthy — until ctx ends, a
// stop signal arrives or the app exits. It reports whether the app exited.
func keepRegistered(ctx context.Context, k *keeper, h health, stop <-chan os.Signal, child *Child, log *slog.Logger) bool {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { k.run(ctx) })
	wg.Go(func() {
		watchHealth(ctx, h.chk, h.interval, func(healthy bool, err error) {
			if healthy {
				log.Info("app ready", "check", h.text, "addr", h.addr.String())
			} else {
				log.Warn("app unhealthy, deregistering", "check", h.text, "fails", unhealthyAfter, "err", err)
			}
			k.setWant(healthy)
		})
	})
	select {
	case <-ctx.Done():
		log.Info("stopping: context done")
	case sig := <-stop:
		log.Info("stopping", "sig", signalName(sig))
	case <-child.Exited():
		return true
	}
	return false
}

// drain revokes the lease and, unless the app exited first, waits until the
// gateways dropped the key: every covering renderer acknowledged the
// removal or, when the revoke failed, the lease had time to expire. ctx
// ends early on a second stop signal or when the app exits.
func drain(ctx context.Context, cfg Config, k *keeper, etcd *conn, ros *roster, appExited bool, log *slog.Logger) {
	stopping := time.Now()
	rev, err := k.revoke(ctx)
	switch {
	case appExited && err != nil:
		log.Warn("deregister failed: the key expires with its lease", "component", "registrar", "err", err, "ttl", cfg.TTL)
	case appExited:
	case err != nil:
		// The key expires with its lease, at most a TTL after the last
		// keep-alive: give gateways that long, within --drain-timeout.
		wait := min(cfg.TTL, cfg.DrainTimeout) - time.Since(stopping)
		log.Warn("deregister failed, waiting for the lease to expire", "component", "registrar", "err", err, "wait", wait)
		if sleepCtx(ctx, wait) != nil {
			log.Info("lease expiry wait cut short", "component", "registrar")
		}
	case rev > 0:
		cli, err := etcd.get() // the revoke succeeded: connected
		if err != nil {
			log.Warn("drain: no etcd client, stopping the app", "component", "drain", "err", err)
			return
		}
		waitDrained(ctx, cli, k.key, rev, cfg.DrainTimeout, ros.Lost(time.Now()), log.With("component", "drain"))
	}
}

// routeSignals routes signals until ctx ends: the first stop signal to
// stop; a second one, or the app's exit, calls hurry (the drain stops
// waiting); the others to the app.
func routeSignals(ctx context.Context, sigs <-chan os.Signal, child *Child, stop chan<- os.Signal, hurry func(), log *slog.Logger) {
	stopping := false
	exited := child.Exited()
	for {
		select {
		case <-ctx.Done():
			return
		case <-exited: // nothing left to drain for
			hurry()
			exited = nil
		case sig := <-sigs:
			s, _ := sig.(syscall.Signal)
			switch {
			case s == syscall.SIGTERM || s == syscall.SIGINT:
				if stopping {
					log.Warn("second stop signal: skipping the drain wait", "sig", signalName(s))
					hurry()
					continue
				}
				stopping = true
				select {
				case stop <- sig:
				default:
				}
			case s != 0:
				child.Forward(s)
			}
		}
	}
}
