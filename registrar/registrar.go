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
// *UsageError means a bad cfg (exit 2). Run catches SIGTERM, SIGINT and the
// forwarded signals itself; as PID 1 it also reaps every zombie.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (int, error) {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, append(stopSignals, forwardSignals...)...)
	defer signal.Stop(sigs)
	return run(ctx, cfg, log, sigs, os.Getpid() == 1)
}

// run is Run with the signal source and the reaping mode given (tests).
func run(ctx context.Context, cfg Config, log *slog.Logger, sigs <-chan os.Signal, reapAll bool) (int, error) {
	if err := cfg.Validate(); err != nil {
		return 2, err
	}
	base := log // sub-components get their own "component", not a second one
	log = base.With("component", "registrar")
	if !cfg.IP.IsValid() {
		ip, err := primaryIPv4()
		if err != nil {
			return 2, &UsageError{Msg: err.Error()}
		}
		cfg.IP = ip
	}
	cc, err := clientConfig(cfg, retryCap(cfg.TTL))
	if err != nil {
		return 2, err
	}
	etcd := &conn{cfg: cc}
	defer etcd.close()
	k := newKeeper(etcd, base.With("component", "lease"), cfg.TTL, cfg.DialTimeout)

	port, err := choosePort(ctx, cfg, k, log)
	if err != nil {
		k.revoke(ctx)
		return 1, err
	}
	addr := netip.AddrPortFrom(cfg.IP, port)
	service := registry.Service(cfg.App, cfg.Env)
	k.key, k.value = registry.Key(cfg.Prefix, cfg.App, cfg.Env, addr), registry.Value(addr)
	k.claimKey, k.claimValue = registry.PortClaimKey(cfg.Prefix, cfg.IP, port), service
	cs, _ := parseCheck(cfg.Check) // validated
	chk, err := cs.probe(addr)
	if err != nil {
		return 2, usagef("--check: %v", err)
	}

	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, syscall.SIGCHLD)
	defer signal.Stop(sigchld)
	env := childEnv(os.Environ(), cfg.PortEnv, cfg.IP.String(), port)
	child, err := startChild(cfg.Command, env, base.With("component", "child"))
	if err != nil {
		k.revoke(ctx)
		return startCode(err), err
	}
	log.Info("instance", "key", k.key, "value", k.value, "pid", child.Pid())

	var wg sync.WaitGroup
	defer wg.Wait()
	reapCtx, stopReaper := context.WithCancel(context.WithoutCancel(ctx))
	defer stopReaper()
	wg.Go(func() { reap(reapCtx, child, reapAll, sigchld) })

	// Signals: the first SIGTERM/SIGINT stops, a second one cuts the drain
	// short; everything else goes to the app until the registrar returns.
	stop := make(chan os.Signal, 1)
	drainCtx, hurry := context.WithCancel(context.WithoutCancel(ctx))
	defer hurry()
	fwdCtx, stopForwarding := context.WithCancel(context.WithoutCancel(ctx))
	defer stopForwarding()
	wg.Go(func() { forward(fwdCtx, sigs, child, stop, hurry, log) })

	regCtx, deregister := context.WithCancel(ctx)
	var regWG sync.WaitGroup
	regWG.Go(func() { k.run(regCtx) })
	regWG.Go(func() {
		watchHealth(regCtx, chk, cfg.CheckInterval, func(healthy bool, err error) {
			if healthy {
				log.Info("app ready", "check", cfg.Check, "addr", addr.String())
			} else {
				log.Warn("app unhealthy, deregistering", "check", cfg.Check, "fails", unhealthyAfter, "err", err)
			}
			k.setWant(healthy)
		})
	})

	exitedFirst := false
	select {
	case <-ctx.Done():
		log.Info("stopping: context done")
	case sig := <-stop:
		log.Info("stopping", "sig", signalName(sig))
	case <-child.Exited():
		exitedFirst = true
	}
	stopping := time.Now()
	deregister()
	regWG.Wait()
	rev, err := k.revoke(ctx)
	switch {
	case exitedFirst && err != nil:
		log.Warn("deregister failed: the key expires with its lease", "err", err, "ttl", cfg.TTL)
	case exitedFirst:
	case err != nil:
		// The key expires with its lease, at most a TTL after the last
		// keep-alive: give gateways that long, within --drain-timeout.
		wait := min(cfg.TTL, cfg.DrainTimeout) - time.Since(stopping)
		log.Warn("deregister failed, waiting for the lease to expire", "err", err, "wait", wait)
		waitExit(drainCtx, child, wait)
	case rev > 0:
		cli, _ := etcd.get() // revoke succeeded: connected
		dctx, cancel := context.WithCancel(drainCtx)
		wg.Go(func() {
			select {
			case <-child.Exited(): // nothing left to drain for
				cancel()
			case <-dctx.Done():
			}
		})
		waitDrained(dctx, cli, k.key, rev, cfg.DrainTimeout, base.With("component", "drain"))
		cancel()
	}
	st := child.Stop(cfg.StopTimeout)
	return st.ExitCode(), nil
}

// choosePort returns --port, or picks one: with a lease granted first so
// the claim lives on it, or by local checks alone when etcd is unreachable.
func choosePort(ctx context.Context, cfg Config, k *keeper, log *slog.Logger) (uint16, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the pick's keep-alive
	claimKey := registry.PortClaimKey(cfg.Prefix, cfg.IP, cfg.Port)
	if cfg.Port != 0 {
		if err := bindFree(cfg.IP, cfg.Port); err != nil {
			log.Warn("fixed port looks busy", "port", cfg.Port, "err", err)
		}
		ok, err := k.claimPort(ctx, claimKey, registry.Service(cfg.App, cfg.Env))
		switch {
		case err != nil:
			log.Warn("etcd unreachable at start: the app starts anyway, registration follows when etcd answers", "err", err)
		case !ok:
			log.Warn("fixed port is claimed by another instance", "key", claimKey)
		}
		return cfg.Port, nil
	}
	p := portPick{IP: cfg.IP, Range: cfg.PortRange, ClaimDir: registry.PortsDir(cfg.Prefix, cfg.IP),
		Service: registry.Service(cfg.App, cfg.Env), Claim: k.claimPort}
	port, err := pickPort(ctx, p, log)
	if err != nil {
		return 0, err
	}
	log.Info("port picked", "port", port, "range", cfg.PortRange.String(), "claimed", k.lease != 0)
	return port, nil
}

// forward routes signals until ctx ends: the first stop signal to stop, a
// second one calls hurry, the others to the app.
func forward(ctx context.Context, sigs <-chan os.Signal, child *Child, stop chan<- os.Signal, hurry func(), log *slog.Logger) {
	stopping := false
	for {
		select {
		case <-ctx.Done():
			return
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

// waitExit waits d, or less if ctx ends or the app exits.
func waitExit(ctx context.Context, child *Child, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-child.Exited():
	case <-t.C:
	}
}
