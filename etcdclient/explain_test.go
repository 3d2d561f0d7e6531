package etcdclient

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/internal/etcdtest"
	"github.com/rollcall/rollcall/internal/proctest"
)

// TestExplain: against an etcd that requires client certificates, a
// request that fails on the connection says why (x509, a refused client
// certificate, a refused address), not just "context deadline exceeded".
func TestExplain(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	t.Parallel()
	certs := etcdtest.WriteCerts(t, t.TempDir())
	srv := etcdtest.StartTLS(t, certs)
	closed := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	tests := []struct {
		name string
		cfg  Config
		want string // substring of the explained error; "" = the request works
	}{
		{"client certificate", Config{CACert: certs.CA, Cert: certs.ClientCert, Key: certs.ClientKey}, ""},
		{"no client certificate", Config{CACert: certs.CA}, "certificate required"},
		// Go's client sends no certificate the server's CAs did not sign.
		{"certificate of another CA", Config{CACert: certs.CA, Cert: certs.StrangerCert, Key: certs.StrangerKey}, "certificate required"},
		{"server's CA unknown", Config{Cert: certs.ClientCert, Key: certs.ClientKey}, "x509: certificate signed by unknown authority"},
		{"nothing listening", Config{Endpoints: []string{closed}}, "connection refused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.cfg.Endpoints == nil {
				tc.cfg.Endpoints = []string{srv.Endpoint}
			}
			tc.cfg.DialTimeout = time.Second
			cc, err := tc.cfg.ClientConfig()
			if err != nil {
				t.Fatal(err)
			}
			cli, err := clientv3.New(cc)
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err = cli.Get(ctx, "/k")
			err = Explain(context.Background(), cc, err)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Get = %v; want it to work", err)
			case tc.want == "":
			case err == nil:
				t.Fatal("Get worked; want an error")
			case !strings.Contains(err.Error(), tc.want) || !errors.Is(err, context.DeadlineExceeded):
				t.Fatalf("Get = %v; want the deadline explained by %q", err, tc.want)
			}
		})
	}
}
