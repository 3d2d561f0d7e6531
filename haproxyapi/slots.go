package haproxyapi

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/rollcall/rollcall/registry"
)

// Slot is one server slot of a backend (s1..sN, in order).
type Slot struct {
	Addr  netip.AddrPort // invalid: never assigned
	Ready bool           // taking traffic; false: maint (free, or draining its last instance)
}

// Layout is every managed backend's slots, by backend name.
type Layout map[string][]Slot

// SlotName is the server name of slot i (0-based): s1, s2, ...
func SlotName(i int) string { return "s" + strconv.Itoa(i+1) }

// slotIndex is SlotName's inverse; -1 for any other name.
func slotIndex(name string) int {
	d, ok := strings.CutPrefix(name, "s")
	if !ok || d == "" || d[0] == '0' || len(d) > 5 || strings.Trim(d, "0123456789") != "" {
		return -1
	}
	n, _ := strconv.Atoi(d)
	return n - 1
}

// SlotCount is how many slots a backend gets for n instances: room for a
// rolling deploy of all of them (2n) and at least 8, in steps of 8.
func SlotCount(n int) int {
	return max(8, (2*n+7)/8*8)
}

// FromServers builds the live layout of the given backends from `show
// servers state`; servers not named s<n> are not slots and are ignored.
func FromServers(srvs []Server, backends func(string) bool) Layout {
	l := Layout{}
	for _, s := range srvs {
		i := slotIndex(s.Name)
		if i < 0 || !backends(s.Backend) {
			continue
		}
		slots := l[s.Backend]
		for len(slots) <= i {
			slots = append(slots, Slot{})
		}
		slots[i] = Slot{Addr: s.Addr, Ready: !s.Maint()}
		l[s.Backend] = slots
	}
	return l
}

// Plan assigns want's instances to slots, starting from cur: an instance
// keeps its slot; a removed one's slot goes to maint (draining); a new one
// takes a free slot in maint whose sessions are drained (busy reports a
// slot with sessions left). structural reports that the config must change
// and HAProxy reload: a backend appears or goes, or its slots ran out (its
// slots are then grown, SlotCount of its instances or twice as many as it
// had, keeping every assignment).
func Plan(cur Layout, want map[string][]netip.AddrPort, busy func(backend string, slot int) bool) (next Layout, structural bool) {
	next = Layout{}
	for name, addrs := range want {
		slots, ok := cur[name]
		if !ok {
			structural = true
			slots = make([]Slot, SlotCount(len(addrs)))
		}
		s, fit := assign(slots, addrs, func(i int) bool { return ok && busy(name, i) })
		if !fit {
			structural = true
			grown := append(slices.Clone(slots), make([]Slot, max(SlotCount(len(addrs)), 2*len(slots))-len(slots))...)
			s, _ = assign(grown, addrs, func(i int) bool { return i < len(slots) && busy(name, i) })
		}
		next[name] = s
	}
	for name := range cur {
		if _, ok := want[name]; !ok {
			structural = true
		}
	}
	return next, structural
}

// assign places addrs into a copy of slots; fit is false when free slots
// ran out.
func assign(slots []Slot, addrs []netip.AddrPort, busy func(int) bool) (s []Slot, fit bool) {
	s = slices.Clone(slots)
	wanted := make(map[netip.AddrPort]bool, len(addrs))
	for _, a := range addrs {
		wanted[a] = true
	}
	placed := make(map[netip.AddrPort]bool, len(addrs))
	retired := make([]bool, len(s)) // goes to maint now: drains before reuse
	for i := range s {              // ready and still wanted: stays; ready and gone: drains
		if s[i].Ready && wanted[s[i].Addr] && !placed[s[i].Addr] {
			placed[s[i].Addr] = true
		} else {
			retired[i] = s[i].Ready
			s[i].Ready = false
		}
	}
	for i := range s { // back again while its slot is in maint: same slot
		if a := s[i].Addr; !s[i].Ready && a.IsValid() && wanted[a] && !placed[a] {
			s[i].Ready, placed[a] = true, true
		}
	}
	var missing []netip.AddrPort
	for _, a := range addrs {
		if !placed[a] {
			missing = append(missing, a)
			placed[a] = true // listed twice: placed once
		}
	}
	slices.SortFunc(missing, func(a, b netip.AddrPort) int { return a.Compare(b) })
	for i := range s {
		if len(missing) == 0 {
			break
		}
		if !s[i].Ready && !retired[i] && !busy(i) {
			s[i] = Slot{Addr: missing[0], Ready: true}
			missing = missing[1:]
		}
	}
	return s, len(missing) == 0
}

// Commands are the runtime API commands turning cur into next, for the
// backends both hold with the same slots: addresses and `state ready`
// first, then `state maint` (a deploy gains its new instance before the old
// one stops taking requests). Names are checked: a backend that is not a
// registry service name is refused, never sent.
func Commands(cur, next Layout) ([]string, error) {
	var up, down []string
	for _, name := range slices.Sorted(maps.Keys(next)) {
		if _, _, err := registry.ParseService(name); err != nil {
			return nil, fmt.Errorf("backend %q: %w", name, err)
		}
		c, n := cur[name], next[name]
		if len(c) != len(n) {
			return nil, fmt.Errorf("backend %s: %d slots live, %d planned (a reload must come first)", name, len(c), len(n))
		}
		for i := range n {
			srv := name + "/" + SlotName(i)
			switch {
			case n[i].Ready && n[i].Addr != c[i].Addr:
				up = append(up, fmt.Sprintf("set server %s addr %s port %d", srv, n[i].Addr.Addr(), n[i].Addr.Port()),
					"set server "+srv+" state ready")
			case n[i].Ready && !c[i].Ready:
				up = append(up, "set server "+srv+" state ready")
			case !n[i].Ready && c[i].Ready:
				down = append(down, "set server "+srv+" state maint")
			}
		}
	}
	return append(up, down...), nil
}

// Confirm compares the live layout with the planned one: every ready slot
// must be out of maint at its address, every other slot in maint.
func Confirm(live, next Layout) error {
	for _, name := range slices.Sorted(maps.Keys(next)) {
		l, n := live[name], next[name]
		if len(l) != len(n) {
			return fmt.Errorf("backend %s: %d slots live, want %d", name, len(l), len(n))
		}
		for i := range n {
			switch {
			case n[i].Ready && (!l[i].Ready || l[i].Addr != n[i].Addr):
				return fmt.Errorf("server %s/%s: live %s (ready %t), want %s ready", name, SlotName(i), l[i].Addr, l[i].Ready, n[i].Addr)
			case !n[i].Ready && l[i].Ready:
				return fmt.Errorf("server %s/%s: live %s ready, want maint", name, SlotName(i), l[i].Addr)
			}
		}
	}
	return nil
}
