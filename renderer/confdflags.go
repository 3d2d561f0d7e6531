package renderer

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/rollcall/rollcall/cli"
	"github.com/rollcall/rollcall/etcdclient"
)

// confd v0.16's command line: which of its flags mean a rollcall flag,
// which belong to its other backends (refused), and its backend and DNS SRV
// settings.

// confdAliases maps confd's flag names to rollcall's flag of the same
// meaning: both names work, and set[] speaks of rollcall's.
var confdAliases = map[string]string{
	"node":           "endpoints",
	"client-ca-keys": "cacert",
	"client-cert":    "cert",
	"client-key":     "key",
	"username":       "user",
	"config-file":    "config",
}

// otherBackends are confd v0.16's flags (and confd.toml keys, with "_")
// that only its other backends read, with the backend that reads them.
var otherBackends = map[string]string{
	"auth-token": "vault/consul", "auth-type": "vault", "app-id": "vault", "user-id": "vault",
	"role-id": "vault", "secret-id": "vault", "path": "vault", "table": "dynamodb",
	"separator": "redis", "file": "file", "filter": "file",
}

// confdOnly are the flags only confd's command lines have: with any of them
// and no -confdir, the confdir is confd's default, /etc/confd.
var confdOnly = map[string]bool{
	"backend": true, "node": true, "watch": true, "config-file": true, "client-cert": true, "client-key": true,
	"client-ca-keys": true, "username": true, "basic-auth": true, "srv-domain": true, "srv-record": true,
	"scheme": true, "sync-only": true, "keep-stage-file": true,
}

// unsupported are confd flags of the etcd backend that the renderer refuses,
// with the reason.
var unsupported = map[string]string{
	"secret-keyring":  "confd's PGP functions (cget, cgets, ...) are not provided",
	"client-insecure": "the renderer always verifies etcd's certificate: give its CA with -client-ca-keys",
}

// refuseOthers refuses the flags of confd's other backends, and the few
// unsupported ones, by name.
func (f *flags) refuseOthers() error {
	for _, name := range slices.Sorted(maps.Keys(otherBackends)) {
		if f.set[name] {
			return cli.Usagef("-%s: a flag of confd's %s backend; the renderer reads etcd only", name, otherBackends[name])
		}
	}
	for _, name := range slices.Sorted(maps.Keys(unsupported)) {
		if f.set[name] {
			return cli.Usagef("-%s: not supported: %s", name, unsupported[name])
		}
	}
	return nil
}

// setBackend checks confd's backend and turns its SRV settings into
// SRVRecord and SRVScheme.
func (c *Config) setBackend(backend, domain, record, scheme string) error {
	switch backend {
	case "":
		backend = "etcd" // confd's default
	case "etcd", "etcdv3":
	default:
		return cli.Usagef("backend %q: not supported: the renderer reads etcd only (-backend etcd or etcdv3, both meaning its v3 API)", backend)
	}
	switch scheme {
	case "", "http", "https":
	default:
		return cli.Usagef("scheme %q: want http or https", scheme)
	}
	c.SRVRecord = etcdclient.SRVRecord(backend, domain, record)
	if c.SRVRecord != "" && backend == "etcd" { // confd adds the scheme for its etcd backend only
		c.SRVScheme = scheme
		if c.SRVScheme == "" {
			c.SRVScheme = "http"
		}
	}
	return nil
}

// ResolveSRV replaces Endpoints with the etcd members SRVRecord lists, if
// set (confd looks them up once, at start).
func (c *Config) ResolveSRV(ctx context.Context, r etcdclient.Resolver) error {
	if c.SRVRecord == "" {
		return nil
	}
	nodes, err := etcdclient.LookupSRV(ctx, r, c.SRVRecord, c.SRVScheme)
	if err != nil {
		return fmt.Errorf("find etcd nodes: %w", err)
	}
	c.Endpoints = nodes
	return nil
}
