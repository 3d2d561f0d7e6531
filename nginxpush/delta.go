package nginxpush

import (
	"fmt"
	"maps"
	"net/netip"
	"strconv"
)

// Delta is what changed from the state nginx holds at Base to the state at
// Version: each listed service's new peers (none: the service has no
// peers any more); services not listed keep theirs. nginx applies it only
// when it holds exactly Base, so a delta never lands on a state it was not
// computed from.
type Delta struct {
	Base, Version int64
	Services      map[string][]netip.AddrPort
}

// Diff returns the delta from old to new: the services whose peers differ
// (order aside), and those old had peers for and new has none for.
func Diff(old, new PeerSet) Delta {
	d := Delta{Base: old.Version, Version: new.Version, Services: map[string][]netip.AddrPort{}}
	for name, as := range new.Services {
		if !sameAddrs(as, old.Services[name]) {
			d.Services[name] = as
		}
	}
	for name, as := range old.Services {
		if _, ok := new.Services[name]; !ok && len(as) > 0 {
			d.Services[name] = nil
		}
	}
	return d
}

// Apply returns p with d applied, at d's version; services left with no
// peers are dropped. p must hold d.Base.
func (p PeerSet) Apply(d Delta) PeerSet {
	q := PeerSet{Version: d.Version, Services: maps.Clone(p.Services)}
	if q.Services == nil {
		q.Services = map[string][]netip.AddrPort{}
	}
	for name, as := range d.Services {
		if len(as) == 0 {
			delete(q.Services, name)
		} else {
			q.Services[name] = as
		}
	}
	return q
}

// Encode writes d in the wire format: "version <n> from <base>", then the
// listed services as PeerSet.Encode writes them.
func (d Delta) Encode() []byte {
	return encode("version "+strconv.FormatInt(d.Version, 10)+" from "+strconv.FormatInt(d.Base, 10), d.Services)
}

// Validate checks what Encode would write against the grammar the Lua side
// enforces.
func (d Delta) Validate() error {
	for _, v := range []int64{d.Base, d.Version} {
		if err := validVersion(v); err != nil {
			return fmt.Errorf("delta: %w", err)
		}
	}
	if d.Base >= d.Version {
		return fmt.Errorf("delta from %d to %d: the base must be older", d.Base, d.Version)
	}
	if err := validServices(d.Services); err != nil {
		return fmt.Errorf("delta: %w", err)
	}
	return nil
}
