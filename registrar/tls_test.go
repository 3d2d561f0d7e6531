package registrar

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/rollcall/rollcall/internal/etcdtest"
)

// TestRunTLS: against an etcd that requires client certificates, the
// registrar registers with --cacert --cert --key (a client without a
// certificate is refused, so the registration shows they were used).
func TestRunTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and child processes")
	}
	t.Parallel()
	certs := etcdtest.WriteCerts(t, t.TempDir())
	srv := etcdtest.StartTLS(t, certs)
	noCert := certs.ClientTLS(t)
	noCert.Certificates = nil
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}, TLS: noCert, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := cli.Get(ctx, "x"); err == nil {
		t.Fatal("etcd served a client without a certificate; the test would show nothing")
	}

	logs := &logBuf{}
	h := &harness{t: t, etcd: srv, logs: logs, cli: srv.Client(t),
		log: slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), logs), &slog.HandlerOptions{Level: slog.LevelDebug}))}
	a := h.newApp()
	cfg := h.config(a)
	cfg.CACert, cfg.Cert, cfg.Key = certs.CA, certs.ClientCert, certs.ClientKey
	h.start(cfg)
	k, v := h.instanceKey(t, a)
	h.registered(k, v, 10*time.Second)
	a.alive(t)
}
