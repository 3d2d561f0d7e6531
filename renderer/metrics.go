package renderer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the renderer's Prometheus metrics, registered on an injected
// Registerer (never the global one).
type Metrics struct {
	renders           *prometheus.CounterVec // resource, result: ok|unchanged|error
	checks            *prometheus.CounterVec // resource, result: ok|failure
	reloads           *prometheus.CounterVec // result: ok|failure
	reloadsCoalesced  prometheus.Counter
	commandDuration   *prometheus.HistogramVec // kind: check|reload
	watchEvents       prometheus.Counter
	watchSilent       prometheus.Counter
	appliedRevision   prometheus.Gauge
	watchRevision     prometheus.Gauge
	etcdRevision      prometheus.Gauge
	lastApplySuccess  *prometheus.GaugeVec // resource
	invalidSkipped    prometheus.Counter
	etcdUp            prometheus.Gauge
	lastReloadSuccess prometheus.Gauge
	loadErrors        prometheus.Counter
	resources         prometheus.Gauge
	failing           prometheus.Gauge
	changeToInstall   prometheus.Histogram
	pushes            *prometheus.CounterVec // result: ok|failure|unchanged
	commandTimeouts   *prometheus.CounterVec // kind: check|reload|push
	resourceFailing   *prometheus.GaugeVec   // resource
	guardHeld         *prometheus.GaugeVec   // resource
	guardHolds        *prometheus.CounterVec // resource
	invalidKeys       prometheus.Counter
	loadFailing       prometheus.Gauge
}

// NewMetrics creates the metrics and registers them on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns, sub = "rollcall", "renderer"
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help})
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help})
	}
	m := &Metrics{
		renders: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "renders_total",
			Help: "Template renders by resource and result (ok = new output installed or staged, unchanged, error)."}, []string{"resource", "result"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "checks_total",
			Help: "check_cmd runs by resource and result (ok, failure)."}, []string{"resource", "result"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "reloads_total",
			Help: "reload_cmd runs by result (ok, failure)."}, []string{"result"}),
		reloadsCoalesced: counter("reloads_coalesced_total", "Changed keys applied by a reload they shared with other changes (events in a batch minus reloads run)."),
		commandDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "command_duration_seconds",
			Help: "Duration of check_cmd and reload_cmd runs.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}, []string{"kind"}),
		watchEvents:     counter("watch_events_total", "Watched key changes received from etcd (bookkeeping keys excluded)."),
		watchSilent:     counter("watch_silent_total", "Watches resumed because neither an event nor a requested progress notification came while etcd moved on (a member cut off from the cluster)."),
		appliedRevision: gauge("applied_revision", "etcd revision fully applied (rendered, checked, installed, reloaded) by every resource."),
		watchRevision:   gauge("watch_revision", "etcd revision the renderer's store is complete at."),
		etcdRevision:    gauge("etcd_revision", "etcd's current revision, as last probed."),
		lastApplySuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "last_apply_success_timestamp_seconds",
			Help: "Unix time a resource was last applied successfully (or found up to date)."}, []string{"resource"}),
		invalidSkipped: counter("invalid_values_skipped_total",
			"Keys whose value was refused (an instance key whose value is not the ip:port it names, or a value a typed function refused), once per key and value."),
		etcdUp:            gauge("etcd_up", "1 when etcd answers, 0 when unreachable."),
		lastReloadSuccess: gauge("last_reload_success_timestamp_seconds", "Unix time of the last successful reload_cmd."),
		loadErrors:        counter("resource_load_errors_total", "conf.d resources or templates that failed to load."),
		resources:         gauge("resources", "Template resources loaded."),
		failing:           gauge("resources_failing", "Resources whose last apply failed and that wait for a retry with backoff."),
		changeToInstall: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "change_to_install_seconds",
			Help:    "From a watched change's arrival to its resource's file installed, minus the resource's own check_cmd (the renderer's share of a change; includes waiting for the reload budget or a --wait).",
			Buckets: shareBuckets}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "pushes_total",
			Help: "Peer sets pushed to nginx's Lua module and confirmed, by result (ok, failure; unchanged = nginx already held it)."}, []string{"result"}),
		commandTimeouts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "command_timeouts_total",
			Help: "check_cmd and reload_cmd runs, and pushes (kind push), killed at --command-timeout."}, []string{"kind"}),
		resourceFailing: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "resource_failing",
			Help: "1 while a resource's last apply failed (it is retried apart, with backoff)."}, []string{"resource"}),
		guardHeld: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "guard_held",
			Help: "1 while the mass-removal guard holds a resource's render (the last good file stays)."}, []string{"resource"}),
		guardHolds: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "guard_holds_total",
			Help: "Renders the mass-removal guard held."}, []string{"resource"}),
		invalidKeys: counter("invalid_keys_skipped_total",
			"Keys of the instance form under a dir that is no valid <app>_<env>, withheld from templates, once per key."),
		loadFailing: gauge("resources_load_failing", "conf.d resources or templates failing to load at the last (re)load."),
	}
	if reg != nil {
		reg.MustRegister(m.commandTimeouts, m.resourceFailing, m.guardHeld, m.guardHolds, m.invalidKeys, m.loadFailing)
		reg.MustRegister(m.renders, m.checks, m.reloads, m.reloadsCoalesced, m.commandDuration, m.watchEvents, m.watchSilent,
			m.appliedRevision, m.watchRevision, m.etcdRevision, m.lastApplySuccess, m.invalidSkipped, m.etcdUp,
			m.lastReloadSuccess, m.loadErrors, m.resources, m.failing, m.changeToInstall, m.pushes)
	}
	return m
}

// serve starts the HTTP server for /metrics, /healthz and /readyz; stop
// shuts it down.
func (r *Renderer) serve(ctx context.Context, reg prometheus.Registerer) (stop func(), err error) {
	ln, err := net.Listen("tcp", r.cfg.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	if g, ok := reg.(prometheus.Gatherer); ok {
		mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !r.running.Load() {
			http.Error(w, "not running", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if msg := r.notReady(); msg != "" {
			http.Error(w, msg, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { // owned: stop waits for done
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.log.Error("metrics server", "err", err)
		}
	}()
	r.log.Info("serving metrics", "addr", ln.Addr().String())
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil { // scrapes still open after 2s: cut them
			r.log.Warn("metrics server shutdown", "err", errors.Join(err, srv.Close()))
		}
		<-done
	}, nil
}

// notReady says why the renderer is not ready, or "" when etcd answers and
// every resource is applied up to the store's revision.
func (r *Renderer) notReady() string {
	switch {
	case !r.running.Load():
		return "not running"
	case !r.up.Load():
		return "etcd unreachable"
	}
	if why := r.why.Load(); why != nil && *why != "" {
		return *why
	}
	if !r.current.Load() || r.store.pendingChanges() {
		return "changes not applied yet"
	}
	return ""
}

// shareBuckets bound change_to_install_seconds finely around its target
// (issue 8: ≤ 20 ms at p99): powers of two put 20 ms inside (16, 32], where
// a quantile read off the buckets could say 26 ms of one change at 17 ms.
var shareBuckets = []float64{
	0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.010, 0.0125,
	0.015, 0.0175, 0.020, 0.025, 0.030, 0.040, 0.050, 0.075, 0.100, 0.150,
	0.200, 0.300, 0.500, 1, 2, 4, 8, 16,
}
