package registrar

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/rollcall/rollcall/embedetcd"
	"github.com/rollcall/rollcall/internal/etcdtest"
	"github.com/rollcall/rollcall/internal/proctest"
)

// writeServingCert writes a self-signed certificate for 127.0.0.1, good as
// CA, server and client certificate, and its key.
func writeServingCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	for f, b := range map[string]*pem.Block{certFile: {Type: "CERTIFICATE", Bytes: der}, keyFile: {Type: "EC PRIVATE KEY", Bytes: kder}} {
		if err := os.WriteFile(f, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

// startTLSEtcd starts an embedded etcd that serves clients over TLS only
// and requires a client certificate signed by cert.
func startTLSEtcd(t *testing.T, cert, key string) string {
	t.Helper()
	var urls []url.URL
	for _, scheme := range []string{"https", "http"} {
		p := proctest.FreePort(t)
		urls = append(urls, url.URL{Scheme: scheme, Host: fmt.Sprintf("127.0.0.1:%d", p)})
	}
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir, cfg.UnsafeNoFsync = "tls", t.TempDir(), true
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = urls[:1], urls[:1]
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = urls[1:], urls[1:]
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile = cert, key
	cfg.ClientTLSInfo.TrustedCAFile, cfg.ClientTLSInfo.ClientCertAuth = cert, true
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		t.Fatal(err)
	case <-time.After(embedetcd.StartTimeout):
		t.Fatal("TLS etcd not ready")
	}
	return urls[0].Host
}

// tlsClient is a test client with the given TLS config.
func tlsClient(t *testing.T, endpoint string, tc *tls.Config) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, TLS: tc, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// TestRunTLS: against an etcd that requires client certificates, the
// registrar registers with --cacert --cert --key (a client without a
// certificate is refused, so the registration shows they were used).
func TestRunTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and child processes")
	}
	t.Parallel()
	cert, key := writeServingCert(t, t.TempDir())
	endpoint := startTLSEtcd(t, cert, key)
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(pair.Leaf)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := tlsClient(t, endpoint, &tls.Config{RootCAs: roots}).Get(ctx, "x"); err == nil {
		t.Fatal("etcd served a client without a certificate; the test would show nothing")
	}

	logs := &logBuf{}
	h := &harness{t: t, etcd: &etcdtest.Server{Endpoint: endpoint}, logs: logs,
		cli: tlsClient(t, endpoint, &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}}),
		log: slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), logs), &slog.HandlerOptions{Level: slog.LevelDebug}))}
	a := h.newApp()
	cfg := h.config(a)
	cfg.CACert, cfg.Cert, cfg.Key = cert, cert, key
	h.start(cfg)
	k, v := h.instanceKey(t, a)
	h.registered(k, v, 10*time.Second)
	a.alive(t)
}
