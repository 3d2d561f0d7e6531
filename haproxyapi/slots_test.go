package haproxyapi

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// layout reads "a_x: 10.0.0.1:80 -10.0.0.2:80 . ." — one backend per
// string, a slot per field: an address (ready), -address (maint), "." (never
// used).
func layout(specs ...string) Layout {
	l := Layout{}
	for _, spec := range specs {
		name, rest, _ := strings.Cut(spec, ":")
		var slots []Slot
		for _, f := range strings.Fields(rest) {
			switch {
			case f == ".":
				slots = append(slots, Slot{})
			case strings.HasPrefix(f, "-"):
				slots = append(slots, Slot{Addr: ap(f[1:])})
			default:
				slots = append(slots, Slot{Addr: ap(f), Ready: true})
			}
		}
		l[name] = slots
	}
	return l
}

func (l Layout) String() string {
	var b strings.Builder
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range l {
			if !yield(k) {
				return
			}
		}
	}) {
		b.WriteString(name + ":")
		for _, s := range l[name] {
			switch {
			case !s.Addr.IsValid():
				b.WriteString(" .")
			case s.Ready:
				b.WriteString(" " + s.Addr.String())
			default:
				b.WriteString(" -" + s.Addr.String())
			}
		}
		b.WriteString(";")
	}
	return b.String()
}

func addrs(ss ...string) []netip.AddrPort {
	var as []netip.AddrPort
	for _, s := range ss {
		as = append(as, ap(s))
	}
	return as
}

func TestPlan(t *testing.T) {
	dots := func(n int) string { return strings.Repeat(" .", n) }
	tests := []struct {
		name       string
		cur        Layout
		want       map[string][]netip.AddrPort
		busy       []string // "a_x/2": slot index 2 still has sessions
		next       Layout
		structural bool
	}{
		{"new app gets 8 slots", layout(), map[string][]netip.AddrPort{"a_x": addrs("10.0.0.2:80", "10.0.0.1:80")},
			nil, layout("a_x: 10.0.0.1:80 10.0.0.2:80" + dots(6)), true},
		{"unchanged", layout("a_x: 10.0.0.1:80 ." + dots(6)), map[string][]netip.AddrPort{"a_x": addrs("10.0.0.1:80")},
			nil, layout("a_x: 10.0.0.1:80 ." + dots(6)), false},
		{"added takes the first free slot", layout("a_x: . 10.0.0.1:80" + dots(6)), map[string][]netip.AddrPort{"a_x": addrs("10.0.0.1:80", "10.0.0.9:80")},
			nil, layout("a_x: 10.0.0.9:80 10.0.0.1:80" + dots(6)), false},
		{"removed drains in maint", layout("a_x: 10.0.0.1:80 10.0.0.2:80" + dots(6)), map[string][]netip.AddrPort{"a_x": addrs("10.0.0.2:80")},
			nil, layout("a_x: -10.0.0.1:80 10.0.0.2:80" + dots(6)), false},
		{"drained slot is reused", layout("a_x: -10.0.0.1:80 10.0.0.2:80"), map[string][]netip.AddrPort{"a_x": addrs("10.0.0.2:80", "10.0.0.3:80")},
			nil, layout("a_x: 10.0.0.3:80 10.0.0.2:80"), false},
		{"busy slot is not reused", layout("a_x: -10.0.0.1:80 10.0.0.2:80 ."), map[string][]netip.AddrPort{"a_x": addrs("10.0.0.2:80", "10.0.0.3:80")},
			[]string{"a_x/0"}, layout("a_x: -10.0.0.1:80 10.0.0.2:80 10.0.0.3:80"), false},
		{"back while draining: same slot", layout("a_x: -10.0.0.1:80 10.0.0.2:80 ."), map[string][]netip.AddrPort{"a_x": addrs("10.0.0.2:80", "10.0.0.1:80")},
			[]string{"a_x/0"}, layout("a_x: 10.0.0.1:80 10.0.0.2:80 ."), false},
		{"slots run out: grown, assignment kept", layout("a_x: 10.0.0.1:80 -10.0.0.2:80"), map[string][]netip.AddrPort{"a_x": addrs("10.0.0.1:80", "10.0.0.3:80", "10.0.0.4:80")},
			[]string{"a_x/1"}, layout("a_x: 10.0.0.1:80 -10.0.0.2:80 10.0.0.3:80 10.0.0.4:80" + dots(4)), true},
		{"app removed", layout("a_x: 10.0.0.1:80", "b_x: 10.0.0.2:80"), map[string][]netip.AddrPort{"b_x": addrs("10.0.0.2:80")},
			nil, layout("b_x: 10.0.0.2:80"), true},
		{"zero instances: all maint", layout("a_x: 10.0.0.1:80 ."), map[string][]netip.AddrPort{"a_x": nil},
			nil, layout("a_x: -10.0.0.1:80 ."), false},
		{"ipv6", layout("a_x: . ."), map[string][]netip.AddrPort{"a_x": addrs("[::1]:80")},
			nil, layout("a_x: [::1]:80 ."), false},
		{"rolling deploy step in 8 slots", layout("a_x: -10.0.0.1:80 10.0.0.2:80 10.0.0.3:80 10.0.0.4:80 10.0.0.5:80 . . ."),
			map[string][]netip.AddrPort{"a_x": addrs("10.0.0.3:80", "10.0.0.4:80", "10.0.0.5:80", "10.0.0.6:80")},
			[]string{"a_x/0"}, layout("a_x: -10.0.0.1:80 -10.0.0.2:80 10.0.0.3:80 10.0.0.4:80 10.0.0.5:80 10.0.0.6:80 . ."), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			busy := func(be string, i int) bool { return slices.Contains(tc.busy, be+"/"+string(rune('0'+i))) }
			next, structural := Plan(tc.cur, tc.want, busy)
			if next.String() != tc.next.String() || structural != tc.structural {
				t.Errorf("Plan(%v) = %v, %t; want %v, %t", tc.cur, next, structural, tc.next, tc.structural)
			}
			if !structural {
				if _, err := Commands(tc.cur, next); err != nil {
					t.Errorf("Commands: %v", err)
				}
			}
		})
	}
}

func TestSlotCount(t *testing.T) {
	for n, want := range map[int]int{0: 8, 1: 8, 4: 8, 5: 16, 8: 16, 9: 24, 100: 200} {
		if got := SlotCount(n); got != want {
			t.Errorf("SlotCount(%d) = %d; want %d", n, got, want)
		}
	}
}

func TestCommands(t *testing.T) {
	cur := layout("a_x: -10.0.0.1:80 10.0.0.2:80 . -[::1]:81")
	next := layout("a_x: 10.0.0.3:80 -10.0.0.2:80 . [::1]:81")
	got, err := Commands(cur, next)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"set server a_x/s1 addr 10.0.0.3 port 80", "set server a_x/s1 state ready",
		"set server a_x/s4 state ready",
		"set server a_x/s2 state maint",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Commands = %q; want %q", got, want)
	}
	if err := Confirm(next, next); err != nil {
		t.Errorf("Confirm(next, next) = %v", err)
	}
	if err := Confirm(cur, next); err == nil {
		t.Error("Confirm(cur, next) = nil; want a mismatch")
	}
	for _, bad := range []string{"a_x/s1 state ready;shutdown", "a x", "ax"} {
		if _, err := Commands(Layout{bad: nil}, Layout{bad: nil}); err == nil {
			t.Errorf("Commands with backend %q: no error", bad)
		}
	}
}

func TestSlotIndex(t *testing.T) {
	for name, want := range map[string]int{"s1": 0, "s12": 11, "s0": -1, "s01": -1, "s": -1, "x1": -1, "s1a": -1, "s999999": -1} {
		if got := slotIndex(name); got != want {
			t.Errorf("slotIndex(%q) = %d; want %d", name, got, want)
		}
	}
}
