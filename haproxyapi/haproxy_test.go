package haproxyapi

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/haproxytest"
)

// TestRealHAProxy: against HAProxy 2.6, 200 slots of a backend rendered
// from the shipped template get their addresses and states in one Run
// (several requests), and `show servers state` read back confirms them;
// `show stat` parses.
func TestRealHAProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("runs haproxy")
	}
	h := haproxytest.New(t, haproxytest.Config{NoRetries: true})
	text, err := os.ReadFile(shippedTemplate)
	if err != nil {
		t.Fatal(err)
	}
	cur := Layout{"big_test": make([]Slot, 200)}
	conf, err := RenderConfig(shippedTemplate, string(text), cur)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.Rendered, "rollcall.cfg"), conf, 0o644); err != nil {
		t.Fatal(err)
	}
	h.Start(t)
	var want []netip.AddrPort
	for i := range 199 {
		want = append(want, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i / 200), byte(i%200 + 1)}), 8080))
	}
	want = append(want, netip.MustParseAddrPort("[::1]:8081"))
	next, structural := Plan(cur, map[string][]netip.AddrPort{"big_test": want}, func(string, int) bool { return false })
	if structural {
		t.Fatal("200 instances in 200 slots planned as structural")
	}
	cmds, err := Commands(cur, next)
	if err != nil {
		t.Fatal(err)
	}
	api := Client{Network: "unix", Address: h.AdminSocket}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := api.Run(ctx, cmds...); err != nil {
		t.Fatal(err)
	}
	out, err := api.Run(ctx, "show servers state")
	if err != nil {
		t.Fatal(err)
	}
	srvs, err := ParseServersState(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := Confirm(FromServers(srvs, func(b string) bool { return b == "big_test" }), next); err != nil {
		t.Errorf("after %d commands: %v", len(cmds), err)
	}
	if out, err = api.Run(ctx, "show stat -1 4 -1"); err != nil {
		t.Fatal(err)
	}
	if s, err := ParseSessions(out); err != nil || len(s) != 200 {
		t.Errorf("ParseSessions: %d servers, %v; want 200", len(s), err)
	}
}
