package etcdclient

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestClientConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A self-signed certificate (valid 2026-2126) and its key, good as CA
	// and as client certificate; this package only loads them.
	cert, key := filepath.Join("testdata", "cert.pem"), filepath.Join("testdata", "key.pem")
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name           string
		ca, cert, key  string
		err            string // substring; "" = ok
		wantTLS, wantC bool
	}{
		{"plain", "", "", "", "", false, false},
		{"ca only", cert, "", "", "", true, false},
		{"client cert", cert, cert, key, "", true, true},
		{"client cert, system roots", "", cert, key, "", true, true},
		{"missing ca", filepath.Join(dir, "nope.pem"), "", "", "CA bundle", false, false},
		{"ca not pem", notPEM, "", "", "no PEM certificate", false, false},
		{"key mismatch", "", cert, notPEM, "client certificate", false, false},
		{"key without cert", "", "", key, "client certificate", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := Config{Endpoints: []string{"a:1"}, CACert: tc.ca, Cert: tc.cert, Key: tc.key, User: "u", Password: "p"}
			cc, err := c.ClientConfig()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ClientConfig() = %v; want an error with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (cc.TLS != nil) != tc.wantTLS || (tc.wantTLS && (len(cc.TLS.Certificates) == 1) != tc.wantC) {
				t.Fatalf("ClientConfig() TLS = %+v; want TLS %v, client cert %v", cc.TLS, tc.wantTLS, tc.wantC)
			}
			if cc.Username != "u" || cc.Password != "p" || cc.Logger == nil || len(cc.DialOptions) != 1 {
				t.Fatalf("ClientConfig() = %+v; want auth, logger and the backoff cap set", cc)
			}
		})
	}
}

func TestClientConfigDefaults(t *testing.T) {
	t.Parallel()
	cc, err := Config{}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cc.DialTimeout != DefaultDialTimeout || cc.DialKeepAliveTime != DefaultKeepAliveTime || cc.DialKeepAliveTimeout != DefaultDialTimeout {
		t.Errorf("defaults: dial %v keep-alive %v/%v", cc.DialTimeout, cc.DialKeepAliveTime, cc.DialKeepAliveTimeout)
	}
	cc, err = Config{DialTimeout: time.Second, KeepAliveTime: 2 * time.Second, KeepAliveTimeout: 3 * time.Second}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cc.DialTimeout != time.Second || cc.DialKeepAliveTime != 2*time.Second || cc.DialKeepAliveTimeout != 3*time.Second {
		t.Errorf("set: dial %v keep-alive %v/%v", cc.DialTimeout, cc.DialKeepAliveTime, cc.DialKeepAliveTimeout)
	}
}

// fakeResolver answers one record.
type fakeResolver struct {
	record string
	addrs  []*net.SRV
	err    error
	ctx    bool // the context reached the lookup
}

func (f *fakeResolver) LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error) {
	f.ctx = ctx != nil && ctx.Value(ctxKey{}) == "here"
	if service != "" || proto != "" || name != f.record {
		return "", nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	return name, f.addrs, f.err
}

type ctxKey struct{}

func TestSRV(t *testing.T) {
	t.Parallel()
	if got := SRVRecord("etcdv3", "example.com", ""); got != "_etcdv3._tcp.example.com." {
		t.Errorf("SRVRecord(etcdv3, example.com) = %q", got)
	}
	if got := SRVRecord("etcd", "example.com", "_etcd-client._tcp.example.com"); got != "_etcd-client._tcp.example.com" {
		t.Errorf("SRVRecord with a record = %q; want the record", got)
	}
	if got := SRVRecord("etcd", "", ""); got != "" {
		t.Errorf("SRVRecord() = %q; want empty", got)
	}
	r := &fakeResolver{record: "_etcdv3._tcp.example.com.", addrs: []*net.SRV{
		{Target: "etcd-1.example.com.", Port: 2379}, {Target: "10.0.0.2", Port: 2380}, {Target: "fd00::3.", Port: 2379},
	}}
	ctx := context.WithValue(context.Background(), ctxKey{}, "here")
	got, err := LookupSRV(ctx, r, "_etcdv3._tcp.example.com.", "")
	want := []string{"etcd-1.example.com:2379", "10.0.0.2:2380", "[fd00::3]:2379"}
	if err != nil || !reflect.DeepEqual(got, want) || !r.ctx {
		t.Errorf("LookupSRV = %q, %v (context passed: %v); want %q", got, err, r.ctx, want)
	}
	got, err = LookupSRV(ctx, r, "_etcdv3._tcp.example.com.", "https")
	if err != nil || got[0] != "https://etcd-1.example.com:2379" {
		t.Errorf("LookupSRV(https) = %q, %v", got, err)
	}
	if _, err := LookupSRV(ctx, r, "_etcd._tcp.other.", ""); err == nil || !strings.Contains(err.Error(), "_etcd._tcp.other.") {
		t.Errorf("LookupSRV(unknown record) = %v; want an error naming it", err)
	}
	empty := &fakeResolver{record: "x."}
	if _, err := LookupSRV(ctx, empty, "x.", ""); err == nil || !strings.Contains(err.Error(), "no targets") {
		t.Errorf("LookupSRV(no targets) = %v", err)
	}
	failing := &fakeResolver{record: "x.", err: errors.New("timeout")}
	if _, err := LookupSRV(ctx, failing, "x.", ""); err == nil {
		t.Error("LookupSRV(resolver error) = nil")
	}
}
