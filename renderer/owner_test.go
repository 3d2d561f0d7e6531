package renderer

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/waitfor"
)

// TestOwnerAndMode: owner and group given by name (which confd ignores) and
// mode are what the installed file gets; a file with the right bytes but the
// wrong owner or mode is installed again (and reloaded); one that is right
// in bytes, mode and owner is left alone.
func TestOwnerAndMode(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	h := newHarness(t)
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody:", err)
	}
	g, err := user.LookupGroup("nogroup")
	if err != nil {
		t.Skip("no group nogroup:", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(g.Gid)
	dest := h.resource("up", `"/"`, listTmpl, "owner = \"nobody\"\ngroup = \"nogroup\"\nmode = \"0640\"\n")
	h.put(key("web_prod", "10.0.0.1", 80), "10.0.0.1:80")
	h.start()
	h.waitFile(dest, "web_prod: 10.0.0.1:80\n")
	wantFile := func(what string) {
		t.Helper()
		waitfor.Cond(t, 10*time.Second, what, func() error {
			fi, err := os.Stat(dest)
			if err != nil {
				return err
			}
			st := fi.Sys().(*syscall.Stat_t)
			if int(st.Uid) != uid || int(st.Gid) != gid || fi.Mode().Perm() != 0o640 {
				return fmt.Errorf("%s is %d:%d %v; want %d:%d -rw-r-----", dest, st.Uid, st.Gid, fi.Mode().Perm(), uid, gid)
			}
			return nil
		})
	}
	wantFile("installed with owner, group and mode")
	waitfor.Cond(t, 10*time.Second, "first reload", func() error {
		if n := h.reloadCount(); n != 1 {
			return fmt.Errorf("%d reloads", n)
		}
		return nil
	})

	// Same bytes, wrong owner, then wrong mode: a render reinstalls and
	// reloads each time.
	for i, spoil := range []func() error{
		func() error { return os.Chown(dest, 0, 0) },
		func() error { return os.Chmod(dest, 0o666) },
	} {
		if err := spoil(); err != nil {
			t.Fatal(err)
		}
		h.put("/web_prod/junk", strconv.Itoa(i)) // not an instance: same bytes
		wantFile("owner and mode restored")
		waitfor.Cond(t, 10*time.Second, "reload after the fix", func() error {
			if n := h.reloadCount(); n != 2+i {
				return fmt.Errorf("%d reloads; want %d", n, 2+i)
			}
			return nil
		})
	}

	// All right already: nothing installed, nothing reloaded.
	before := metric(t, h.reg, "rollcall_renderer_renders_total", "resource", "up.toml", "result", "unchanged")
	h.put("/web_prod/junk", "still not an instance")
	waitfor.Cond(t, 10*time.Second, "unchanged render", func() error {
		if n := metric(t, h.reg, "rollcall_renderer_renders_total", "resource", "up.toml", "result", "unchanged"); n <= before {
			return fmt.Errorf("renders_total{result=unchanged} still %v", n)
		}
		return nil
	})
	if n := h.reloadCount(); n != 3 {
		t.Errorf("%d reloads after an unchanged render; want 3", n)
	}
}
