// Package haproxyapi changes the servers of HAProxy backends through its
// runtime API (the `stats socket ... level admin`) instead of a reload: each
// backend has a fixed number of server slots (s1..sN), Plan assigns the
// registered instances to them, Commands turns the difference into `set
// server` commands, and Confirm reads `show servers state` back. Only a new
// or removed backend, or one whose slots ran out, needs a new config and a
// reload (Plan reports it as structural).
//
// Everything sent to HAProxy is built from typed values: backend names that
// pass registry.ParseService, slot names s<n>, and netip.AddrPort addresses
// (registry.ParseAddr's canonical form). No string from etcd reaches the
// socket as it was read.
package haproxyapi

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
)

// Client talks to one HAProxy runtime API socket.
type Client struct {
	Network string // "unix" or "tcp"
	Address string // socket path, or loopback ip:port
}

// ParseURL reads a resource's push URL: haproxy:///run/haproxy/admin.sock
// (unix socket) or haproxy://127.0.0.1:9999 (TCP, loopback only). Its query
// may carry `config` (absolute path of the rendered config) and `template`
// (the config's template, a name under the confdir's templates/), returned
// as they are.
func ParseURL(s string) (Client, url.Values, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Client{}, nil, err
	}
	if u.Scheme != "haproxy" || u.User != nil || u.Fragment != "" {
		return Client{}, nil, fmt.Errorf("%q: want haproxy:///<socket path> or haproxy://127.0.0.1:<port>", s)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return Client{}, nil, fmt.Errorf("%q: %w", s, err)
	}
	if u.Host == "" {
		if u.Path == "" || u.Path == "/" {
			return Client{}, nil, fmt.Errorf("%q: no socket path", s)
		}
		return Client{Network: "unix", Address: u.Path}, q, nil
	}
	ap, err := netip.ParseAddrPort(u.Host)
	if err != nil || !ap.Addr().IsLoopback() || (u.Path != "" && u.Path != "/") {
		return Client{}, nil, fmt.Errorf("%q: want a loopback ip:port and no path (the runtime API is not for remote callers)", s)
	}
	return Client{Network: "tcp", Address: ap.String()}, q, nil
}

// Push is a resource's `push = "haproxy://..."`: the runtime API, and the
// config the renderer writes with its template.
type Push struct {
	API      Client
	Config   string // absolute path, in a directory HAProxy reads with -f
	Template string // a file name under the confdir's templates/
}

// ParsePush reads a push URL with its `config` and `template` (ParseURL),
// both required.
func ParsePush(s string) (Push, error) {
	c, q, err := ParseURL(s)
	if err != nil {
		return Push{}, err
	}
	p := Push{API: c, Config: q.Get("config"), Template: q.Get("template")}
	if !filepath.IsAbs(p.Config) || p.Template == "" || filepath.Base(p.Template) != p.Template {
		return Push{}, fmt.Errorf("%q: want ?config=<absolute path>&template=<file name under templates/>", s)
	}
	return p, nil
}

// maxLine bounds one request: HAProxy reads a CLI request into one buffer
// (tune.bufsize, 16 kB by default); commands are sent in chunks below it.
const maxLine = 8000

// Run sends cmds, joined by ";" in chunks of at most maxLine bytes, one
// connection per chunk, and returns HAProxy's answers concatenated.
func (c Client) Run(ctx context.Context, cmds ...string) (string, error) {
	var out strings.Builder
	for len(cmds) > 0 {
		n, size := 0, 0
		for n < len(cmds) && (n == 0 || size+len(cmds[n])+1 <= maxLine) {
			size += len(cmds[n]) + 1
			n++
		}
		ans, err := c.once(ctx, strings.Join(cmds[:n], ";"))
		out.WriteString(ans)
		if err != nil {
			return out.String(), err
		}
		cmds = cmds[n:]
	}
	return out.String(), nil
}

// once sends one request line and reads the answer until HAProxy closes
// (non-interactive mode: it closes after answering).
func (c Client) once(ctx context.Context, line string) (string, error) {
	if strings.ContainsAny(line, "\n\r") {
		return "", fmt.Errorf("haproxy runtime API: newline in command %q", line)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, c.Network, c.Address)
	if err != nil {
		return "", fmt.Errorf("haproxy runtime API %s: %w", c.Address, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if _, err := io.WriteString(conn, line+"\n"); err != nil {
		return "", fmt.Errorf("haproxy runtime API %s: %w", c.Address, err)
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return string(b), fmt.Errorf("haproxy runtime API %s: %w", c.Address, err)
	}
	return string(b), nil
}
