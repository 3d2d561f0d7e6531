package registrar

import (
	"context"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/cli"
	"github.com/rollcall/rollcall/etcdclient"
)

// clientConfig builds the etcd client config (etcdclient: quiet logger, dial
// and keep-alive times, TLS and auth), with gRPC's reconnect backoff capped
// at retryCap: its default cap of 120s would keep the instance invisible
// long after etcd is back.
func clientConfig(c Config, retryCap time.Duration) (clientv3.Config, error) {
	cc, err := etcdclient.Config{
		Endpoints:        c.Endpoints,
		DialTimeout:      c.DialTimeout,
		KeepAliveTime:    10 * time.Second,
		KeepAliveTimeout: c.DialTimeout,
		RetryCap:         retryCap,
		CACert:           c.CACert,
		Cert:             c.Cert,
		Key:              c.Key,
		User:             c.User,
		Password:         c.Password,
	}.ClientConfig()
	if err != nil {
		return cc, cli.Usagef("--cacert/--cert/--key: %v", err)
	}
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
		return nil, fmt.Errorf("connect etcd %v: %w", c.cfg.Endpoints, c.explain(err))
	}
	c.cli = cli
	return cli, nil
}

// explain attaches the connection's real cause (x509, a refused client
// certificate, a refused address) to an error that only says a deadline
// passed.
func (c *conn) explain(err error) error {
	return etcdclient.Explain(context.Background(), c.cfg, err)
}

// close closes the client, if one was made.
func (c *conn) close() error {
	if c.cli == nil {
		return nil
	}
	return etcdclient.Close(c.cli)
}
