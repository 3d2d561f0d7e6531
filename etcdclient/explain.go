package etcdclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Explain returns err with the real cause attached when err only says a
// deadline passed. The etcd client waits for a usable connection until the
// request's deadline and then reports the bare context error, dropping
// gRPC's connection error: a refused TLS handshake (x509), a client
// certificate the server refused, a refused or unreachable address all
// read "context deadline exceeded". Explain dials the endpoints itself to
// find which; any other error is returned as it is.
func Explain(ctx context.Context, cc clientv3.Config, err error) error {
	if !isDeadline(err) {
		return err
	}
	if cause := diagnose(ctx, cc); cause != nil {
		return fmt.Errorf("%w (%v)", err, cause)
	}
	return err
}

func isDeadline(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	s, ok := status.FromError(err)
	return ok && s.Code() == codes.DeadlineExceeded
}

// diagnose dials every endpoint and returns the first one's error, or nil
// when one of them completes a connection (then the cause is elsewhere:
// a slow or leaderless etcd).
func diagnose(ctx context.Context, cc clientv3.Config) error {
	timeout := cc.DialTimeout
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	var first error
	for _, ep := range cc.Endpoints {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		err := dialOnce(dctx, ep, cc.TLS)
		cancel()
		if err == nil {
			return nil
		}
		if first == nil {
			first = fmt.Errorf("%s: %w", ep, err)
		}
	}
	return first
}

// dialOnce connects to endpoint; with TLS it completes the handshake and
// reads the server's first bytes, where a server that refuses the client
// certificate says so (TLS 1.3 verifies it after the client's handshake).
func dialOnce(ctx context.Context, endpoint string, tc *tls.Config) error {
	host := endpoint
	if u, err := url.Parse(endpoint); err == nil && u.Host != "" {
		host = u.Host
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return err
	}
	defer conn.Close()
	if tc == nil {
		return nil
	}
	c := tc.Clone()
	if h, _, err := net.SplitHostPort(host); err == nil && c.ServerName == "" {
		c.ServerName = h
	}
	c.NextProtos = []string{"h2"}
	tlsConn := tls.Client(conn, c)
	if err := tlsConn.HandshakeContext(ctx); err != nil {
		return err
	}
	if err := tlsConn.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	var buf [1]byte
	if _, err := tlsConn.Read(buf[:]); err != nil && !isTimeout(err) {
		return err
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
