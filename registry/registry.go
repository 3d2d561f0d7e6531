// Package registry holds the one truth both programs share: the key grammar,
// the strict instance address parser, and the renderer acknowledgement.
//
// Keys (prefix empty by default):
//
//	<prefix>/<app>_<env>/<ip>-<port>  = <ip>:<port>        (instance lease)
//	<prefix>/_ports/<ip>/<port>       = <app>_<env>        (instance lease)
//	<prefix>/_renderers/<id>          = Ack as JSON        (renderer lease)
package registry

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// ValidName reports whether s may be used as an app or env name:
// [A-Za-z0-9][A-Za-z0-9.-]*. A loop, not a regexp: it runs for every
// service of every render (1,000 at a time) and every watched key.
func ValidName(s string) error {
	ok := s != ""
	for i := 0; ok && i < len(s); i++ {
		c := s[i]
		ok = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || i > 0 && (c == '.' || c == '-')
	}
	if !ok {
		return fmt.Errorf("invalid name %q: want [A-Za-z0-9][A-Za-z0-9.-]*", short(s))
	}
	return nil
}

// CleanPrefix normalises a key prefix: "" stays "", otherwise it starts with
// "/" and has no trailing "/".
func CleanPrefix(p string) string {
	p = strings.Trim(p, "/")
	if p == "" {
		return ""
	}
	return "/" + p
}

// Service is the directory name of an app in an environment: "<app>_<env>".
func Service(app, env string) string { return app + "_" + env }

// ServiceDir is the key prefix holding an app's instances, with trailing "/".
func ServiceDir(prefix, app, env string) string {
	return CleanPrefix(prefix) + "/" + Service(app, env) + "/"
}

// InstanceName is the last key segment of an instance: "<ip>-<port>".
func InstanceName(a netip.AddrPort) string {
	return a.Addr().String() + "-" + strconv.Itoa(int(a.Port()))
}

// Key is the instance key "<prefix>/<app>_<env>/<ip>-<port>".
func Key(prefix, app, env string, a netip.AddrPort) string {
	return ServiceDir(prefix, app, env) + InstanceName(a)
}

// Value is the instance value: "ip:port", or "[ip6]:port".
func Value(a netip.AddrPort) string { return a.String() }

// PortsDir is the prefix of all port claims of one host, with trailing "/".
func PortsDir(prefix string, ip netip.Addr) string {
	return CleanPrefix(prefix) + "/_ports/" + ip.String() + "/"
}

// PortClaimKey is "<prefix>/_ports/<ip>/<port>".
func PortClaimKey(prefix string, ip netip.Addr, port uint16) string {
	return PortsDir(prefix, ip) + strconv.Itoa(int(port))
}

// RenderersDir is the prefix of renderer acknowledgements, with trailing "/".
func RenderersDir(prefix string) string { return CleanPrefix(prefix) + "/_renderers/" }

// RendererKey is "<prefix>/_renderers/<id>".
func RendererKey(prefix, id string) string { return RenderersDir(prefix) + id }

// ParseAddr parses an instance value strictly: a canonical IPv4 "a.b.c.d:port"
// or IPv6 "[addr]:port", no zone, port 1-65535, nothing else. It is the gate
// that keeps registered values from ever becoming config text.
// maxQuoted bounds how much of a refused input an error quotes: a 1 MiB
// value must not become a 1 MiB log line.
const maxQuoted = 64

// short cuts s to maxQuoted bytes for an error message, saying so.
func short(s string) string {
	if len(s) <= maxQuoted {
		return s
	}
	return s[:maxQuoted] + "...(truncated)"
}

func ParseAddr(s string) (netip.AddrPort, error) {
	a, err := netip.ParseAddrPort(s)
	if err != nil {
		if len(s) > maxQuoted { // netip's error quotes all of s again
			return netip.AddrPort{}, fmt.Errorf("parse address %q: not <ip>:<port>", short(s))
		}
		return netip.AddrPort{}, fmt.Errorf("parse address %q: %w", s, err)
	}
	ip := a.Addr()
	switch {
	case ip.Zone() != "":
		return netip.AddrPort{}, fmt.Errorf("parse address %q: zone not allowed", short(s))
	case ip.Is4In6():
		return netip.AddrPort{}, fmt.Errorf("parse address %q: IPv4-mapped IPv6 not allowed", short(s))
	case a.Port() == 0:
		return netip.AddrPort{}, fmt.Errorf("parse address %q: port 0", short(s))
	case !canonical(a, s):
		return netip.AddrPort{}, fmt.Errorf("parse address %q: not canonical (want %q)", short(s), a.String())
	}
	return a, nil
}

// canonical reports whether s is a's canonical form, without allocating:
// it runs once per registered instance on every render.
func canonical(a netip.AddrPort, s string) bool {
	var buf [64]byte
	return string(a.AppendTo(buf[:0])) == s
}

// ParseInstanceName parses the last key segment "<ip>-<port>" strictly.
func ParseInstanceName(name string) (netip.AddrPort, error) {
	i := strings.LastIndexByte(name, '-')
	if i < 0 {
		return netip.AddrPort{}, fmt.Errorf("parse instance name %q: want <ip>-<port>", short(name))
	}
	var buf [64]byte // canonical forms compared without allocating: once per instance per render
	ip, err := netip.ParseAddr(name[:i])
	if err != nil || ip.Zone() != "" || string(ip.AppendTo(buf[:0])) != name[:i] {
		return netip.AddrPort{}, fmt.Errorf("parse instance name %q: bad ip", short(name))
	}
	port, err := strconv.ParseUint(name[i+1:], 10, 16)
	if err != nil || port == 0 || string(strconv.AppendUint(buf[:0], port, 10)) != name[i+1:] {
		return netip.AddrPort{}, fmt.Errorf("parse instance name %q: bad port", short(name))
	}
	return netip.AddrPortFrom(ip, uint16(port)), nil
}

// ParseInstance checks a registered key/value pair: the value must parse with
// ParseAddr and agree with the key's last segment "<ip>-<port>".
func ParseInstance(key, value string) (netip.AddrPort, error) {
	a, err := ParseAddr(value)
	if err != nil {
		return netip.AddrPort{}, err
	}
	name := key[strings.LastIndexByte(key, '/')+1:]
	k, err := ParseInstanceName(name)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if k != a {
		return netip.AddrPort{}, fmt.Errorf("value %q disagrees with key %q", short(value), short(key))
	}
	return a, nil
}

// Covers reports whether a watched prefix covers key, by confd's rule: "/a"
// matches "/a" and "/a/...", never "/ab". A prefix ending in "/" matches
// everything below it; "" and "/" match every key.
func Covers(prefix, key string) bool {
	if prefix == "" || prefix == "/" {
		return true
	}
	if strings.HasSuffix(prefix, "/") {
		return strings.HasPrefix(key, prefix)
	}
	return key == prefix || strings.HasPrefix(key, prefix+"/")
}

// Ack is what a renderer publishes under RendererKey after each applied batch:
// every change up to Revision under Prefixes is live in its gateway.
// Stopped is its last ack before a clean stop revokes the lease: a key that
// vanishes after it is a renderer gone for good; one that vanishes without
// it expired, and the renderer may be alive but cut off from etcd.
type Ack struct {
	Revision int64     `json:"revision"`
	Prefixes []string  `json:"prefixes"`
	Updated  time.Time `json:"updated"`
	Stopped  bool      `json:"stopped,omitempty"`
	// Applied (optional; older renderers omit it) holds, per resource
	// prefix, the revision every resource reading under that prefix has
	// applied, never below Revision: a resource failing under one prefix
	// does not hold back registrars whose keys only other prefixes cover.
	Applied map[string]int64 `json:"applied,omitempty"`
}

// RevisionFor is the revision up to which every change of key is live: the
// least Applied revision among the prefixes covering key, or Revision when
// none does (or the renderer publishes no Applied).
func (a Ack) RevisionFor(key string) int64 {
	rev, found := int64(0), false
	for p, r := range a.Applied {
		if Covers(p, key) && (!found || r < rev) {
			rev, found = r, true
		}
	}
	if !found || rev < a.Revision {
		return a.Revision
	}
	return rev
}

// CoversKey reports whether any of the ack's prefixes covers key.
func (a Ack) CoversKey(key string) bool {
	for _, p := range a.Prefixes {
		if Covers(p, key) {
			return true
		}
	}
	return false
}
