// Package etcdtest starts a real embedded etcd on loopback for tests (or
// the etcd binary BinaryEnv names).
// Import it only from _test.go files.
package etcdtest

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/rollcall/rollcall/embedetcd"
)

// Server is an embedded etcd owned by one test. Stop and Restart keep the
// data dir and the client port, so clients reconnect to the same endpoint.
type Server struct {
	t        testing.TB
	dir      string
	client   string
	peer     string
	certs    *Certs // StartTLS
	close    func() // nil when stopped
	Endpoint string // "127.0.0.1:port", stable across Restart
}

// Start starts a server on free loopback ports; it stops at test cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	s := newServer(t)
	s.startFresh()
	t.Cleanup(s.Stop)
	return s
}

func newServer(t testing.TB) *Server {
	s := &Server{t: t, dir: t.TempDir(), client: freeAddr(t), peer: freeAddr(t)}
	s.Endpoint = s.client
	return s
}

func (s *Server) start() {
	s.t.Helper()
	if err := s.tryStart(); err != nil {
		s.t.Fatal(err)
	}
}

// startFresh is start for a new server: when one of its ports was taken
// after all (FreePort reserves them among tests; something else in 10000-
// 19999 took one once), it starts on two others. Restart keeps its ports.
func (s *Server) startFresh() {
	s.t.Helper()
	for attempt := 1; ; attempt++ {
		err := s.tryStart()
		if err == nil {
			return
		}
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			s.t.Fatal(err)
		}
		s.t.Logf("etcd on %s, %s: %v; on other ports", s.client, s.peer, err)
		s.client, s.peer, s.dir = freeAddr(s.t), freeAddr(s.t), s.t.TempDir() // a failed start may have begun a data dir
		s.Endpoint = s.client
	}
}

func (s *Server) tryStart() (err error) {
	if s.certs != nil {
		s.close, err = s.startEmbed()
	} else {
		s.close, err = s.startPlain()
	}
	return err
}

func (s *Server) startPlain() (func(), error) {
	if bin := binary(); bin != "" {
		return s.startBinary(bin)
	}
	ctx, cancel := context.WithTimeout(context.Background(), embedetcd.StartTimeout)
	defer cancel()
	srv, err := embedetcd.Start(ctx, embedetcd.Config{
		Dir: s.dir, ClientAddr: s.client, PeerAddr: s.peer, NoFsync: true,
		Logger: zaptest.NewLogger(s.t, zaptest.Level(zapcore.ErrorLevel)),
	})
	if err != nil {
		return nil, err
	}
	return srv.Close, nil
}

// Stop stops the server, keeping its data; a no-op when stopped.
func (s *Server) Stop() {
	if s.close != nil {
		s.close()
		s.close = nil
	}
}

// Restart starts a stopped server again on the same data dir and port.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// Client returns a client for the server, closed at test cleanup.
func (s *Server) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	return s.AuthClient(t, "", "")
}

// AuthClient returns a client logged in as user (none when empty), closed
// at test cleanup.
func (s *Server) AuthClient(t testing.TB, user, password string) *clientv3.Client {
	t.Helper()
	cc := clientv3.Config{
		Endpoints:   []string{s.Endpoint},
		DialTimeout: 20 * time.Second, // a login is slow bcrypt under -race
		Logger:      zap.NewNop(),
		Username:    user,
		Password:    password,
	}
	if s.certs != nil {
		cc.TLS = s.certs.ClientTLS(t)
	}
	c, err := clientv3.New(cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// EnableAuth adds user root with password and the root role and turns
// auth on, through cli (a client from before auth).
func EnableAuth(t testing.TB, cli *clientv3.Client, password string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // bcrypt is slow under -race
	defer cancel()
	for _, step := range []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", password); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("enable auth: %v", err)
		}
	}
}
