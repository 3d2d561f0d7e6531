package registrar

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
)

// clientConfig builds the etcd client config: quiet logger, dial timeout,
// reconnect backoff capped at retryCap (gRPC's default cap is 120s, which
// would keep the instance invisible long after etcd is back), TLS and auth.
func clientConfig(c Config, retryCap time.Duration) (clientv3.Config, error) {
	cc := clientv3.Config{
		Endpoints:            c.Endpoints,
		DialTimeout:          c.DialTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: c.DialTimeout,
		Username:             c.User,
		Password:             c.Password,
		Logger:               zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: retryCap},
			MinConnectTimeout: c.DialTimeout,
		})},
	}
	if c.CACert == "" && c.Cert == "" {
		return cc, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CACert != "" {
		pem, err := os.ReadFile(c.CACert)
		if err != nil {
			return cc, usagef("--cacert: %v", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return cc, usagef("--cacert %s: no PEM certificate", c.CACert)
		}
	}
	if c.Cert != "" {
		cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return cc, usagef("--cert/--key: %v", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	cc.TLS = tc
	return cc, nil
}

// conn dials etcd lazily: with auth, clientv3.New fails while etcd is down,
// and etcd being down must never stop the app from starting.
type conn struct {
	cfg clientv3.Config
	mu  sync.Mutex // get is called from the keeper and the roster
	cli *clientv3.Client
}

func (c *conn) get() (*clientv3.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cli != nil {
		return c.cli, nil
	}
	cli, err := clientv3.New(c.cfg)
	if err != nil {
		return nil, fmt.Errorf("connect etcd %v: %w", c.cfg.Endpoints, err)
	}
	c.cli = cli
	return cli, nil
}

// close closes the client, if one was made. The client reports its own
// shutdown as context.Canceled: that is no error.
func (c *conn) close() error {
	if c.cli == nil {
		return nil
	}
	if err := c.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("close etcd client: %w", err)
	}
	return nil
}
