package renderer

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/rollcall/rollcall/nginxpush"
)

// peerState is a resource's peer set as rendered (templates/peers.tmpl):
// each app's line as the template wrote it and its parsed peers, at a
// version: the etcd revision, or one past the last version pushed when the
// same revision renders other peers (a template edit). Kept between renders, it lets a change
// re-parse only the lines that changed and push only those apps.
type peerState struct {
	version   int64
	apps      map[string]appPeers
	dest, url string // the resource's, when it was kept
}

type appPeers struct {
	line  string
	addrs []netip.AddrPort
}

// parsePeers parses a rendered peer set (service lines, no version line)
// strictly (nginxpush.ParseLine, no service twice) at version. A line equal
// to prev's line for the same service is taken as parsed then.
func parsePeers(body []byte, version int64, prev *peerState) (*peerState, error) {
	st := &peerState{version: version, apps: map[string]appPeers{}}
	if prev != nil {
		st.apps = make(map[string]appPeers, len(prev.apps))
	}
	if len(body) == 0 {
		return st, nil
	}
	rest := string(body)
	if !strings.HasSuffix(rest, "\n") {
		return nil, fmt.Errorf("must end with a newline")
	}
	for n := 1; rest != ""; n++ {
		line, after, _ := strings.Cut(rest, "\n")
		rest = after
		name, _, _ := strings.Cut(line, " ")
		if _, dup := st.apps[name]; dup {
			return nil, fmt.Errorf("line %d: service %s listed twice", n, name)
		}
		if p, ok := prev.app(name); ok && p.line == line {
			st.apps[name] = p
			continue
		}
		_, addrs, err := nginxpush.ParseLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		st.apps[name] = appPeers{line: line, addrs: addrs}
	}
	return st, nil
}

func (s *peerState) app(name string) (appPeers, bool) {
	if s == nil {
		return appPeers{}, false
	}
	a, ok := s.apps[name]
	return a, ok
}

// same reports whether s and o hold the same peers (versions aside).
func (s *peerState) same(o *peerState) bool {
	if len(s.apps) != len(o.apps) {
		return false
	}
	for name, a := range s.apps {
		if b, ok := o.apps[name]; !ok || !a.same(b) {
			return false
		}
	}
	return true
}

// same compares the lines, and only when they differ the peers in order.
func (a appPeers) same(b appPeers) bool {
	if a.line == b.line {
		return true
	}
	if len(a.addrs) != len(b.addrs) {
		return false
	}
	return slices.Equal(slices.SortedFunc(slices.Values(a.addrs), netip.AddrPort.Compare),
		slices.SortedFunc(slices.Values(b.addrs), netip.AddrPort.Compare))
}

// diff is the delta from base to s: the apps whose peers changed, and
// those base had that s has not (with none).
func (s *peerState) diff(base *peerState) nginxpush.Delta {
	d := nginxpush.Delta{Base: base.version, Version: s.version, Services: map[string][]netip.AddrPort{}}
	for name, a := range s.apps {
		if b, ok := base.apps[name]; !ok || !a.same(b) {
			d.Services[name] = a.addrs
		}
	}
	for name := range base.apps {
		if _, ok := s.apps[name]; !ok {
			d.Services[name] = nil
		}
	}
	return d
}

// set is s as the full state.
func (s *peerState) set() nginxpush.PeerSet {
	p := nginxpush.PeerSet{Version: s.version, Services: make(map[string][]netip.AddrPort, len(s.apps))}
	for name, a := range s.apps {
		p.Services[name] = a.addrs
	}
	return p
}
