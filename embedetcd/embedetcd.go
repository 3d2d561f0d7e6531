// Package embedetcd runs a single-member etcd server in-process. The renderer
// uses it for --embed-etcd; tests use it through internal/etcdtest.
// The registrar must never import it.
package embedetcd

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Config says where the server keeps its data and listens.
type Config struct {
	Dir        string      // data directory
	ClientAddr string      // host:port for clients
	PeerAddr   string      // host:port for the (unused) peer listener; "" picks a free loopback port
	Logger     *zap.Logger // nil = silent
	NoFsync    bool        // tests only: much faster, unsafe on crash
}

// Server is a running single-member etcd.
type Server struct {
	e        *embed.Etcd
	Endpoint string // client endpoint, "127.0.0.1:port"
}

// Start starts the server and waits until it serves, or ctx ends.
func Start(ctx context.Context, c Config) (*Server, error) {
	if c.PeerAddr == "" {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		c.PeerAddr = fmt.Sprintf("127.0.0.1:%d", p)
	}
	cfg := embed.NewConfig()
	cfg.Name = "rollcall"
	cfg.Dir = c.Dir
	cfg.UnsafeNoFsync = c.NoFsync
	cu := url.URL{Scheme: "http", Host: c.ClientAddr}
	pu := url.URL{Scheme: "http", Host: c.PeerAddr}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	lg := c.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", c.Dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("embedded etcd not ready: %w", ctx.Err())
	}
	return &Server{e: e, Endpoint: e.Clients[0].Addr().String()}, nil
}

// Err reports a fatal server error.
func (s *Server) Err() <-chan error { return s.e.Err() }

// Close stops the server and waits until it has stopped.
func (s *Server) Close() { s.e.Close() }

// freePort returns a loopback TCP port that was free a moment ago (the
// peer URL needs one: port 0 would not be advertised right).
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	return port, nil
}

// StartTimeout is a sensible bound for Start.
const StartTimeout = 10 * time.Second
