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
//
// A delta (Delta, Diff) carries only the services that changed since the
// version nginx holds:
//
//	version <n> from <base>
//	<app>_<env> <ip:port> ...
//	<app>_<env>
//
// nginx applies it only on top of <base>; a listed service replaces its
// peers, a service listed alone has none, the others are kept.
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
	return encode("version "+strconv.FormatInt(p.Version, 10), p.Services)
}

func encode(head string, svcs map[string][]netip.AddrPort) []byte {
	var b bytes.Buffer
	b.WriteString(head)
	b.WriteByte('\n')
	for _, name := range slices.Sorted(maps.Keys(svcs)) {
		b.WriteString(name)
		for _, a := range sortedAddrs(svcs[name]) {
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
	if err := validVersion(p.Version); err != nil {
		return fmt.Errorf("peer set: %w", err)
	}
	if err := validServices(p.Services); err != nil {
		return fmt.Errorf("peer set: %w", err)
	}
	return nil
}

func validVersion(v int64) error {
	if v < 0 || v > maxVersion {
		return fmt.Errorf("version %d out of range 0..%d", v, int64(maxVersion))
	}
	return nil
}

func validServices(svcs map[string][]netip.AddrPort) error {
	for name, as := range svcs {
		if _, _, err := registry.ParseService(name); err != nil {
			return err
		}
		seen := make(map[netip.AddrPort]bool, len(as))
		for _, a := range as {
			if _, err := registry.ParseAddr(a.String()); err != nil {
				return fmt.Errorf("service %s: %w", name, err)
			}
			if seen[a] {
				return fmt.Errorf("service %s: address %s listed twice", name, a)
			}
			seen[a] = true
		}
	}
	return nil
}

// Equal reports whether p and q route the same (versions aside): the same
// peers for every service, a service with no peers being the same as one
// not listed (nginx answers 502 for both; a delta drops an emptied one).
func (p PeerSet) Equal(q PeerSet) bool {
	return subset(p.Services, q.Services) && subset(q.Services, p.Services)
}

func subset(a, b map[string][]netip.AddrPort) bool {
	for name, as := range a {
		if !sameAddrs(as, b[name]) {
			return false
		}
	}
	return true
}

func sameAddrs(a, b []netip.AddrPort) bool {
	if len(a) != len(b) {
		return false
	}
	// In the same order (the common case: rendered alike) nothing is sorted.
	return slices.Equal(a, b) || slices.Equal(sortedAddrs(a), sortedAddrs(b))
}

// Decode parses the wire format strictly, with the Lua module's rules: the
// first line "version <n>" (decimal, no leading zero), then one line per
// service, no service twice, every address canonical and listed once. A
// delta is refused: a full state is expected.
func Decode(b []byte) (PeerSet, error) {
	v, base, svcs, err := decode(b)
	if err != nil {
		return PeerSet{}, fmt.Errorf("decode peers: %w", err)
	}
	if base >= 0 {
		return PeerSet{}, fmt.Errorf("decode peers: line 1: a delta (\"from %d\"), not a full state", base)
	}
	return PeerSet{Version: v, Services: svcs}, nil
}

// DecodeDelta parses a delta ("version <n> from <base>", base < n, then
// the changed services) with Decode's rules.
func DecodeDelta(b []byte) (Delta, error) {
	v, base, svcs, err := decode(b)
	if err != nil {
		return Delta{}, fmt.Errorf("decode delta: %w", err)
	}
	if base < 0 {
		return Delta{}, fmt.Errorf("decode delta: line 1: a full state, not a delta (\"version <n> from <base>\")")
	}
	return Delta{Base: base, Version: v, Services: svcs}, nil
}

// decode parses either form; base is -1 for a full state.
func decode(b []byte) (v, base int64, svcs map[string][]netip.AddrPort, err error) {
	s := string(b)
	if s == "" {
		return 0, 0, nil, fmt.Errorf("empty")
	}
	if !strings.HasSuffix(s, "\n") {
		return 0, 0, nil, fmt.Errorf("must end with a newline")
	}
	lines := strings.Split(s[:len(s)-1], "\n")
	if v, base, err = parseHead(lines[0]); err != nil {
		return 0, 0, nil, fmt.Errorf("line 1: %w", err)
	}
	svcs = make(map[string][]netip.AddrPort, len(lines)-1)
	for i, line := range lines[1:] {
		name, as, err := ParseLine(line)
		if err != nil {
			return 0, 0, nil, fmt.Errorf("line %d: %w", i+2, err)
		}
		if _, dup := svcs[name]; dup {
			return 0, 0, nil, fmt.Errorf("line %d: service %s listed twice", i+2, name)
		}
		svcs[name] = as
	}
	return v, base, svcs, nil
}

// parseHead reads "version <n>" (base -1) or "version <n> from <base>"
// with base < n.
func parseHead(line string) (v, base int64, err error) {
	head, from, isDelta := strings.Cut(line, " from ")
	if v, err = parseVersion(head); err != nil {
		return 0, 0, err
	}
	if !isDelta {
		return v, -1, nil
	}
	if base, err = parseNumber(from); err != nil {
		return 0, 0, fmt.Errorf("want \"version <n> from <base>\", got %q", clip(line))
	}
	if base >= v {
		return 0, 0, fmt.Errorf("delta from %d to %d: the base must be older", base, v)
	}
	return v, base, nil
}

func parseVersion(line string) (int64, error) {
	d, ok := strings.CutPrefix(line, "version ")
	if !ok {
		return 0, fmt.Errorf("want \"version <n>\", got %q", clip(line))
	}
	v, err := parseNumber(d)
	if err != nil {
		return 0, fmt.Errorf("want \"version <n>\", got %q: %w", clip(line), err)
	}
	return v, nil
}

// parseNumber reads a version number: decimal, no sign, no leading zero,
// at most maxVersion.
func parseNumber(d string) (int64, error) {
	if d == "" || len(d) > 16 || (len(d) > 1 && d[0] == '0') || strings.Trim(d, "0123456789") != "" {
		return 0, fmt.Errorf("not a version number")
	}
	v, err := strconv.ParseInt(d, 10, 64)
	if err != nil || v > maxVersion {
		return 0, fmt.Errorf("version %q out of range", clip(d))
	}
	return v, nil
}

// ParseLine parses one service line ("<app>_<env> <ip:port> ...", no
// newline) with Decode's rules: a caller that keeps what it parsed before
// re-parses only the lines that changed.
func ParseLine(line string) (string, []netip.AddrPort, error) {
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
