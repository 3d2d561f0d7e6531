// Package etcdclient builds the etcd client configuration both programs use:
// endpoints, dial and keep-alive times, TLS files, user and password, a quiet
// logger, and a cap on gRPC's reconnect backoff. It imports the etcd client
// only (the registrar ships in every app image).
package etcdclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
)

// Defaults for the zero fields of Config.
const (
	DefaultDialTimeout   = 5 * time.Second
	DefaultKeepAliveTime = 10 * time.Second
	DefaultRetryCap      = 2 * time.Second
)

// Config says how to reach etcd. Zero durations take the defaults above.
type Config struct {
	Endpoints        []string      // host:port or URL (http:// or https://)
	DialTimeout      time.Duration // connect, and the first connection attempt of every reconnect
	KeepAliveTime    time.Duration // gRPC keep-alive ping interval
	KeepAliveTimeout time.Duration // no ping answer within this: the connection is dead; 0 = DialTimeout
	// RetryCap caps gRPC's reconnect backoff. gRPC's own cap is 120s: after
	// a long etcd outage a client would reconnect up to two minutes after
	// etcd answers again.
	RetryCap time.Duration

	CACert    string // PEM CA bundle; "" = the system roots (when TLS is on)
	Cert, Key string // PEM client certificate and key; TLS is on when CACert or Cert is set
	User      string
	Password  string
}

// ClientConfig builds the clientv3.Config. Its errors name the TLS file that
// could not be used.
func (c Config) ClientConfig() (clientv3.Config, error) {
	dial := orDefault(c.DialTimeout, DefaultDialTimeout)
	cc := clientv3.Config{
		Endpoints:            c.Endpoints,
		DialTimeout:          dial,
		DialKeepAliveTime:    orDefault(c.KeepAliveTime, DefaultKeepAliveTime),
		DialKeepAliveTimeout: orDefault(c.KeepAliveTimeout, dial),
		Username:             c.User,
		Password:             c.Password,
		Logger:               zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: grpcbackoff.Config{
				BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2,
				MaxDelay: orDefault(c.RetryCap, DefaultRetryCap),
			},
			MinConnectTimeout: dial,
		})},
	}
	tc, err := c.tlsConfig()
	if err != nil {
		return cc, err
	}
	cc.TLS = tc
	return cc, nil
}

// New builds the config and the client. clientv3.New does not wait for a
// connection, except with User set (it logs in): then it fails while etcd
// is down.
func New(c Config) (*clientv3.Client, error) {
	cc, err := c.ClientConfig()
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("etcd client %v: %w", c.Endpoints, err)
	}
	return cli, nil
}

// Close closes cli. The client reports its own shutdown as
// context.Canceled: that is no error.
func Close(cli *clientv3.Client) error {
	if err := cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("close etcd client: %w", err)
	}
	return nil
}

// tlsConfig is nil without TLS files.
func (c Config) tlsConfig() (*tls.Config, error) {
	if c.CACert == "" && c.Cert == "" && c.Key == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CACert != "" {
		pem, err := os.ReadFile(c.CACert)
		if err != nil {
			return nil, fmt.Errorf("CA bundle: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA bundle %s: no PEM certificate", c.CACert)
		}
	}
	if c.Cert != "" || c.Key != "" {
		cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return nil, fmt.Errorf("client certificate %q and key %q: %w", c.Cert, c.Key, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
