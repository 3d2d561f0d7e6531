// Package nginxpush sends peer sets to nginx's rollcall.peers Lua module
// (lua/rollcall/peers.lua) and confirms nginx holds them, so membership
// changes reach nginx without a reload.
//
// The wire format is the one place both sides agree on, written here and
// parsed strictly by the Lua module (and by Decode):
//
//	version <n>
//	<app>_<env> <ip:port> <ip:port> ...
//
// one line per service, every line ending in "\n", single spaces, addresses
// canonical (registry.ParseAddr). The rendered peers file nginx loads at
// start has the same format.
package nginxpush

import (
	"bytes"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/rollcall/rollcall/registry"
)

// PeerSet is the full state nginx holds: every service's peers at Version
// (the etcd revision it was read at; only ever increases).
type PeerSet struct {
	Version  int64
	Services map[string][]netip.AddrPort
}

// maxVersion is the largest version the Lua side represents exactly (2^53-1).
const maxVersion = 1<<53 - 1

// Encode writes p in the wire format: services sorted by name, each one's
// peers sorted by address, so equal sets encode to equal bytes.
func (p PeerSet) Encode() []byte {
	var b bytes.Buffer
	b.WriteString("version ")
	b.WriteString(strconv.FormatInt(p.Version, 10))
	b.WriteByte('\n')
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		b.WriteString(name)
		for _, a := range sortedAddrs(p.Services[name]) {
			b.WriteByte(' ')
			b.WriteString(a.String())
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func sortedAddrs(as []netip.AddrPort) []netip.AddrPort {
	s := slices.Clone(as)
	slices.SortFunc(s, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return s
}

// Validate checks what Encode would write against the grammar the Lua side
// enforces, so a set nginx would refuse is never sent.
func (p PeerSet) Validate() error {
	if p.Version < 0 || p.Version > maxVersion {
		return fmt.Errorf("peer set: version %d out of range 0..%d", p.Version, int64(maxVersion))
	}
	for name, as := range p.Services {
		if _, _, err := registry.ParseService(name); err != nil {
			return fmt.Errorf("peer set: %w", err)
		}
		seen := make(map[netip.AddrPort]bool, len(as))
		for _, a := range as {
			if _, err := registry.ParseAddr(a.String()); err != nil {
				return fmt.Errorf("peer set: service %s: %w", name, err)
			}
			if seen[a] {
				return fmt.Errorf("peer set: service %s: address %s listed twice", name, a)
			}
			seen[a] = true
		}
	}
	return nil
}

// Equal reports whether p and q hold the same peers (versions aside).
func (p PeerSet) Equal(q PeerSet) bool {
	return maps.EqualFunc(p.Services, q.Services, func(a, b []netip.AddrPort) bool {
		return slices.Equal(sortedAddrs(a), sortedAddrs(b))
	})
}

// Decode parses the wire format strictly, with the Lua module's rules: the
// first line "version <n>" (decimal, no leading zero), then one line per
// service, no service twice, every address canonical and listed once.
func Decode(b []byte) (PeerSet, error) {
	s := string(b)
	if s == "" {
		return PeerSet{}, fmt.Errorf("decode peers: empty")
	}
	if !strings.HasSuffix(s, "\n") {
		return PeerSet{}, fmt.Errorf("decode peers: must end with a newline")
	}
	lines := strings.Split(s[:len(s)-1], "\n")
	v, err := parseVersion(lines[0])
	if err != nil {
		return PeerSet{}, fmt.Errorf("decode peers: line 1: %w", err)
	}
	p := PeerSet{Version: v, Services: make(map[string][]netip.AddrPort, len(lines)-1)}
	for i, line := range lines[1:] {
		name, as, err := parseLine(line)
		if err != nil {
			return PeerSet{}, fmt.Errorf("decode peers: line %d: %w", i+2, err)
		}
		if _, dup := p.Services[name]; dup {
			return PeerSet{}, fmt.Errorf("decode peers: line %d: service %s listed twice", i+2, name)
		}
		p.Services[name] = as
	}
	return p, nil
}

func parseVersion(line string) (int64, error) {
	d, ok := strings.CutPrefix(line, "version ")
	if !ok || d == "" || len(d) > 16 || (len(d) > 1 && d[0] == '0') || strings.Trim(d, "0123456789") != "" {
		return 0, fmt.Errorf("want \"version <n>\", got %q", clip(line))
	}
	v, err := strconv.ParseInt(d, 10, 64)
	if err != nil || v > maxVersion {
		return 0, fmt.Errorf("version %q out of range", clip(d))
	}
	return v, nil
}

func parseLine(line string) (string, []netip.AddrPort, error) {
	fields := strings.Split(line, " ")
	name := fields[0]
	if _, _, err := registry.ParseService(name); err != nil {
		return "", nil, fmt.Errorf("bad service name %q", clip(name))
	}
	as := make([]netip.AddrPort, 0, len(fields)-1)
	seen := make(map[netip.AddrPort]bool, len(fields)-1)
	for _, f := range fields[1:] {
		a, err := registry.ParseAddr(f)
		if err != nil {
			return "", nil, fmt.Errorf("service %s: %w", name, err)
		}
		if seen[a] {
			return "", nil, fmt.Errorf("service %s: address %s listed twice", name, a)
		}
		seen[a] = true
		as = append(as, a)
	}
	return name, as, nil
}

// clip keeps error messages about untrusted input short.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
