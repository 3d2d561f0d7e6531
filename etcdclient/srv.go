package etcdclient

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Resolver is the part of *net.Resolver that LookupSRV uses; tests give a
// stand-in instead of real DNS.
type Resolver interface {
	LookupSRV(ctx context.Context, service, proto, name string) (cname string, addrs []*net.SRV, err error)
}

var _ Resolver = (*net.Resolver)(nil)

// SRVRecord is the record confd looks up: record when set, else
// "_<backend>._tcp.<domain>." (so "_etcdv3._tcp.example.com." for
// -backend etcdv3 -srv-domain example.com); "" when both are empty.
func SRVRecord(backend, domain, record string) string {
	if record != "" || domain == "" {
		return record
	}
	return "_" + backend + "._tcp." + domain + "."
}

// LookupSRV finds etcd members through the SRV record as confd does: each
// target (its trailing dot cut) and port joined as host:port, in the order
// the resolver returns them (priority, then weight), with "scheme://" in
// front when scheme is not empty.
func LookupSRV(ctx context.Context, r Resolver, record, scheme string) ([]string, error) {
	_, addrs, err := r.LookupSRV(ctx, "", "", record)
	if err != nil {
		return nil, fmt.Errorf("SRV record %s: %w", record, err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("SRV record %s: no targets", record)
	}
	nodes := make([]string, 0, len(addrs))
	for _, a := range addrs {
		n := net.JoinHostPort(strings.TrimRight(a.Target, "."), strconv.Itoa(int(a.Port)))
		if scheme != "" {
			n = scheme + "://" + n
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}
