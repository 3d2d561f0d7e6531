package registrar

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rollcall/rollcall/cli"
	"time"

	"github.com/rollcall/rollcall/internal/etcdtest"
)

func TestClientConfigTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certs := etcdtest.WriteCerts(t, dir)
	cert, key := certs.ClientCert, certs.ClientKey
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name           string
		ca, cert, key  string
		want           string // usage error substring; "" = ok
		wantTLS, wantC bool
	}{
		{"plain", "", "", "", "", false, false},
		{"ca only", cert, "", "", "", true, false},
		{"client cert", cert, cert, key, "", true, true},
		{"client cert, system roots", "", cert, key, "", true, true},
		{"missing ca", filepath.Join(dir, "nope.pem"), "", "", "--cacert", false, false},
		{"ca not pem", notPEM, "", "", "no PEM certificate", false, false},
		{"key mismatch", "", cert, notPEM, "--cert/--key", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			c.CACert, c.Cert, c.Key, c.User, c.Password = tc.ca, tc.cert, tc.key, "u", "p"
			cc, err := clientConfig(c, time.Second)
			if tc.want != "" {
				var ue *cli.UsageError
				if !errors.As(err, &ue) || !strings.Contains(ue.Error(), tc.want) {
					t.Fatalf("clientConfig() = %v; want *cli.UsageError with %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (cc.TLS != nil) != tc.wantTLS || (tc.wantTLS && (len(cc.TLS.Certificates) == 1) != tc.wantC) {
				t.Fatalf("clientConfig() TLS = %+v; want TLS %v, client cert %v", cc.TLS, tc.wantTLS, tc.wantC)
			}
			if cc.Username != "u" || cc.Password != "p" || cc.Logger == nil || cc.DialTimeout != c.DialTimeout {
				t.Fatalf("clientConfig() = %+v; want auth, logger and dial timeout set", cc)
			}
		})
	}
}

// TestRunAuth: with etcd auth on, the registrar registers with --user and
// ETCD_PASSWORD, also when etcd was down at start (clientv3.New fails then,
// so the client is dialled lazily).
func TestRunAuth(t *testing.T) {
	h := newHarness(t)
	etcdtest.EnableAuth(t, h.cli, "s3cret")
	h.etcd.Stop()
	a := h.newApp()
	cfg := h.config(a)
	cfg.User, cfg.Password = "root", "s3cret"
	cfg.DialTimeout = 5 * time.Second // bcrypt in a race-instrumented etcd: ~0.7s a login
	h.start(cfg)
	a.wait(t, "listening", 30*time.Second)
	h.etcd.Restart()
	if err := h.cli.Close(); err != nil {
		t.Log(err)
	}
	h.cli = authClient(t, h.etcd.Endpoint, "root", "s3cret")
	key, value := h.instanceKey(t, a)
	h.registered(key, value, 20*time.Second) // logins are slow under -race; 2×TTL is shown without auth
	a.alive(t)
}
