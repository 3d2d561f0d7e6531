package renderer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/internal/waitfor"
)

// isolation is the setting of the tests below: resource a reads /a_prod, b
// reads /b_prod; a command of a (its check_cmd or reload_cmd: hang) hangs
// while the file works is missing, and each of its runs logs its shell's
// pid (its process group) and start time to starts.
type isolation struct {
	h            *harness
	works        string
	starts       string
	destA, destB string
	revA         int64 // a's change, made while a hangs
	pushes       bool  // a pushes its peer set (a's dest: after the version line)
	hung         int   // the index of a's first hung run in runs
	reloads      int   // reload runs once started
}

func newIsolation(t *testing.T, timeout time.Duration) *isolation {
	t.Helper()
	h := newHarness(t)
	h.cfg.CommandTimeout = timeout
	h.serveMetrics()
	iso := &isolation{h: h, works: filepath.Join(h.out, "a-works"), starts: filepath.Join(h.out, "a-starts")}
	if err := os.WriteFile(iso.works, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	iso.destB = h.resource("b", `"/b_prod"`, listTmpl, "")
	return iso
}

// hang is the shell command that logs a run and hangs while works is
// missing (exec: the process that hangs is the command's own, which Go
// reaps once it is killed, so its process group is gone then).
func (iso *isolation) hang() string {
	return fmt.Sprintf("echo $$ $(date +%%s.%%N) >> %s; test -e %s || exec sleep 60", iso.starts, iso.works)
}

// withCheck makes a a resource with check_cmd hang; check (which may
// use {{.src}} or {{.dest}}).
func (iso *isolation) withCheck(check string) {
	iso.destA = iso.h.resource("a", `"/a_prod"`, listTmpl, fmt.Sprintf("check_cmd = %q\n", iso.hang()+"; "+check))
}

// runs are the start times of a's hanging command so far, with the process
// group of the latest.
func (iso *isolation) runs(t *testing.T) (starts []float64, pgid int) {
	t.Helper()
	b, err := os.ReadFile(iso.starts)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for l := range strings.Lines(string(b)) {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue // a run being written
		}
		s, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			t.Fatalf("%s: %q: %v", iso.starts, l, err)
		}
		starts = append(starts, s)
		if pgid, err = strconv.Atoi(f[0]); err != nil {
			t.Fatalf("%s: %q: %v", iso.starts, l, err)
		}
	}
	return starts, pgid
}

// start applies every resource once (a's command or endpoint works) and
// returns how many runs of a's command (requests to a's endpoint) that
// took.
func (iso *isolation) start(t *testing.T) int {
	t.Helper()
	h := iso.h
	h.put(key("a_prod", "10.0.0.1", 80), "10.0.0.1:80")
	h.put(key("b_prod", "10.0.0.1", 80), "10.0.0.1:80")
	h.start()
	h.waitFile(iso.destB, "b_prod: 10.0.0.1:80\n")
	waitfor.Cond(t, 10*time.Second, "first applies", func() error {
		b, err := os.ReadFile(iso.destA)
		if got := string(b); err != nil || got != "a_prod: 10.0.0.1:80\n" && !(iso.pushes && strings.HasSuffix(got, "\na_prod 10.0.0.1:80\n")) {
			return fmt.Errorf("a = %q, %v", got, err)
		}
		if code, body := h.readyz(); code != http.StatusOK {
			return fmt.Errorf("/readyz %d %q", code, body)
		}
		return nil
	})
	iso.reloads = h.reloadCount()
	starts, _ := iso.runs(t)
	return len(starts)
}

// hangA makes a's command hang and changes a; it returns once the command
// runs (hangs) for that change.
func (iso *isolation) hangA(t *testing.T, before int) {
	t.Helper()
	if err := os.Remove(iso.works); err != nil {
		t.Fatal(err)
	}
	iso.hung = before
	iso.revA = iso.h.put(key("a_prod", "10.0.0.2", 80), "10.0.0.2:80")
	waitfor.Cond(t, 10*time.Second, "a's command hangs", func() error {
		if starts, _ := iso.runs(t); len(starts) <= before {
			return fmt.Errorf("%d runs of a's command", len(starts))
		}
		return nil
	})
}

// changeB changes b while a hangs (with also in the same transaction) and
// waits at most 1s for b to be installed, reloaded and acknowledged for
// b's prefix, while neither the global revision nor a's prefix covers a's
// change.
func (iso *isolation) changeB(t *testing.T, also ...clientv3.Op) {
	t.Helper()
	h := iso.h
	start := time.Now()
	resp, err := h.cli.Txn(context.Background()).Then(append(also, clientv3.OpPut(key("b_prod", "10.0.0.2", 80), "10.0.0.2:80"))...).Commit()
	if err != nil {
		t.Fatal(err)
	}
	revB := resp.Header.Revision
	waitfor.Cond(t, time.Second, "b applied and acknowledged for its prefix while a hangs", func() error {
		if got := readFile(t, iso.destB); got != "b_prod: 10.0.0.1:80 10.0.0.2:80\n" {
			return fmt.Errorf("b = %q", got)
		}
		if n := h.reloadCount(); n != iso.reloads+1 {
			return fmt.Errorf("%d reloads", n-iso.reloads)
		}
		a, err := h.ack()
		if err != nil {
			return err
		}
		if got := a.RevisionFor(key("b_prod", "10.0.0.2", 80)); got < revB {
			return fmt.Errorf("ack for b's key %d < %d (%+v)", got, revB, a)
		}
		if got := a.RevisionFor(key("a_prod", "10.0.0.2", 80)); got >= iso.revA {
			return fmt.Errorf("ack for a's key %d covers a's unapplied change %d", got, iso.revA)
		}
		if a.Revision >= iso.revA {
			return fmt.Errorf("global ack %d covers a's unapplied change %d", a.Revision, iso.revA)
		}
		return nil
	})
	t.Logf("b applied and acknowledged %v after its change while a hung", time.Since(start).Round(time.Millisecond))
}

// editB edits b's template while a hangs and waits at most 1s for b's
// file to follow: the loop reloads resources meanwhile (and a's job lands
// on the resource state loaded then).
func (iso *isolation) editB(t *testing.T) {
	t.Helper()
	start := time.Now()
	iso.h.write("templates/b.tmpl", "# edited\n"+listTmpl)
	waitfor.Cond(t, time.Second, "b's template edit applied while a hangs", func() error {
		if got := readFile(t, iso.destB); !strings.HasPrefix(got, "# edited\n") {
			return fmt.Errorf("b = %q", got)
		}
		return nil
	})
	t.Logf("b's template edit applied %v after it while a hung", time.Since(start).Round(time.Millisecond))
}

// waitFailing waits until a's command (kind) was killed at its timeout,
// and a is reported failing in metrics and /readyz; b is not.
func (iso *isolation) waitFailing(t *testing.T, kind string) {
	t.Helper()
	h := iso.h
	waitfor.Cond(t, 10*time.Second, "a's timeout counted and reported", func() error {
		if v := metric(t, h.reg, "rollcall_renderer_command_timeouts_total", "kind", kind); v < 1 {
			return fmt.Errorf("command_timeouts_total{%s} %v", kind, v)
		}
		if v := metric(t, h.reg, "rollcall_renderer_resource_failing", "resource", "a.toml"); v != 1 {
			return fmt.Errorf("resource_failing{a.toml} %v", v)
		}
		if code, body := h.readyz(); code != http.StatusServiceUnavailable || !strings.Contains(body, "failing: a.toml") {
			return fmt.Errorf("/readyz %d %q", code, body)
		}
		return nil
	})
	if v := metric(t, h.reg, "rollcall_renderer_resource_failing", "resource", "b.toml"); v != 0 {
		t.Errorf("resource_failing{b.toml} %v", v)
	}
}

// waitRecovered makes a's command work again and waits for a's retry to
// apply a's change.
func (iso *isolation) waitRecovered(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(iso.works, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	iso.waitAcked(t)
	if got := readFile(t, iso.destA); got != "a_prod: 10.0.0.1:80 10.0.0.2:80\n" {
		t.Errorf("a = %q after its retry applied", got)
	}
	if _, err := os.Stat(pendingMark(iso.destA)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a's pending mark still there once applied: %v", err)
	}
}

// waitAcked waits for a's change to be acknowledged and /readyz ready.
func (iso *isolation) waitAcked(t *testing.T) {
	t.Helper()
	h := iso.h
	waitfor.Cond(t, 15*time.Second, "a retried and acknowledged", func() error {
		a, err := h.ack()
		if err != nil || a.Revision < iso.revA {
			return fmt.Errorf("ack %+v, %v", a, err)
		}
		if code, body := h.readyz(); code != http.StatusOK {
			return fmt.Errorf("/readyz %d %q", code, body)
		}
		return nil
	})
}

// TestHungReloadIsolated: resource a's reload_cmd hangs until
// --command-timeout; meanwhile resource b's change is installed, reloaded
// and acknowledged for b's prefix within 1s (before: b waited for a's
// timeout on the loop). a's timeout is counted, a is reported failing in
// metrics and /readyz, and the global revision stays behind a's change.
func TestHungReloadIsolated(t *testing.T) {
	t.Parallel()
	iso := newIsolation(t, 3*time.Second)
	h := iso.h
	iso.destA = h.resource("a", `"/a_prod"`, listTmpl, "")
	h.write("conf.d/a.toml", fmt.Sprintf("[template]\nsrc = \"a.tmpl\"\ndest = %q\nkeys = [\"/a_prod\"]\nreload_cmd = %q\n",
		iso.destA, fmt.Sprintf("%s; echo a >> %s", iso.hang(), h.reloads)))
	iso.hangA(t, iso.start(t))
	if got := readFile(t, iso.destA); got != "a_prod: 10.0.0.1:80 10.0.0.2:80\n" {
		t.Fatalf("a = %q while its reload hangs; want its change installed", got)
	}
	iso.changeB(t)
	iso.waitFailing(t, "reload")
	iso.waitRecovered(t) // its retry runs apart, with backoff
}

// TestHungCheckIsolated: resource a's check_cmd hangs until
// --command-timeout, on its staged file ({{.src}}) or on its installed file
// (without {{.src}}); meanwhile resource b's change is installed, reloaded
// and acknowledged for b's prefix within 1s (before: b waited 3s, for a's
// check on the loop). a's check is killed at the timeout and counted as a
// failure (an installed file is rolled back), a is reported failing in
// metrics and /readyz, retried apart with backoff, and applied once its
// check stops hanging.
func TestHungCheckIsolated(t *testing.T) {
	t.Parallel()
	const timeout = 3 * time.Second
	eachHungCheck(t, timeout, func(t *testing.T, iso *isolation, kind string) {
		iso.changeB(t)
		iso.waitFailing(t, "check")
		h := iso.h
		if v := metric(t, h.reg, "rollcall_renderer_checks_total", "resource", "a.toml", "result", "failure"); v < 1 {
			t.Errorf("checks_total{a.toml,failure} %v", v)
		}
		if kind == "installed" && !logged(h, `msg="rolled back"`, "resource=a.toml") {
			t.Errorf("a's installed file was not rolled back after its check failed")
		}
		iso.waitRetried(t, timeout)
		iso.editB(t) // a resource reload while a's retry hangs (it retries a at once when it ends)
		iso.waitRecovered(t)
	})
}

// eachHungCheck runs f as a parallel subtest per kind of check_cmd of a:
// on its staged file ("src") and on its installed file ("installed"), with
// --command-timeout timeout. f starts once a's check hangs for a's change.
func eachHungCheck(t *testing.T, timeout time.Duration, f func(t *testing.T, iso *isolation, kind string)) {
	for _, tc := range []struct{ kind, check string }{
		{"src", "cat {{.src}} >/dev/null"},
		{"installed", "cat {{.dest}} >/dev/null"},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			t.Parallel()
			iso := newIsolation(t, timeout)
			iso.withCheck(tc.check)
			iso.hangA(t, iso.start(t))
			f(t, iso, tc.kind)
		})
	}
}

// TestHungCheckSharedCommand: resources a and c share an installed-file
// check command (one nginx config, one `nginx -t`); b has none. While a's
// run of it hangs, a batch of b and c applies b within 1s, while c waits
// for the command: its file is not installed while a's check runs (a's
// check would test it), and c applies once a's run ends.
func TestHungCheckSharedCommand(t *testing.T) {
	t.Parallel()
	iso := newIsolation(t, 3*time.Second)
	iso.withCheck("true")
	h := iso.h
	destC := h.resource("c", `"/c_prod"`, listTmpl, fmt.Sprintf("check_cmd = %q\n", iso.hang()+"; true"))
	h.put(key("c_prod", "10.0.0.1", 80), "10.0.0.1:80")
	iso.hangA(t, iso.start(t))
	iso.changeB(t, clientv3.OpPut(key("c_prod", "10.0.0.2", 80), "10.0.0.2:80"))
	if got := readFile(t, destC); got != "c_prod: 10.0.0.1:80\n" {
		t.Fatalf("c = %q while a's run of their check command hangs; want it not installed yet", got)
	}
	if err := os.WriteFile(iso.works, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	h.waitFile(destC, "c_prod: 10.0.0.1:80 10.0.0.2:80\n")
	if v := metric(t, h.reg, "rollcall_renderer_command_timeouts_total", "kind", "check"); v < 1 {
		t.Errorf("c installed before a's hung check ended (command_timeouts_total{check} %v)", v)
	}
	iso.waitRecovered(t)
}

// waitRetried waits for a second hung run of a's command and checks that
// it started after the first was killed at timeout and a backoff (the
// first: retryBase ± 25%).
func (iso *isolation) waitRetried(t *testing.T, timeout time.Duration) {
	t.Helper()
	var starts []float64
	waitfor.Cond(t, 10*time.Second, "a retried", func() error {
		if starts, _ = iso.runs(t); len(starts) < iso.hung+2 { // the first applies, the hung run, its retry
			return fmt.Errorf("%d runs of a's command", len(starts))
		}
		return nil
	})
	gap := time.Duration((starts[iso.hung+1] - starts[iso.hung]) * float64(time.Second))
	// The first backoff is at least 3/4 retryBase; the run's start is logged
	// a little after its timeout starts, under load up to ~0.1s. Without a
	// backoff the gap is the timeout and a few ms.
	if min := timeout + retryBase/4; gap < min {
		t.Errorf("a retried %v after its hung run started; want >= %v (killed at its timeout, then a backoff)", gap, min)
	}
	t.Logf("a retried %v after its hung run started (timeout %v)", gap.Round(time.Millisecond), timeout)
}

// logged reports whether one line of h's log holds every part.
func logged(h *harness, parts ...string) bool {
	for l := range strings.Lines(h.logs.String()) {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			return true
		}
	}
	return false
}

// TestHungCheckShutdown: the renderer stopped while a check_cmd hangs
// returns at once (not at --command-timeout), the check's process group
// killed; its flight ends before Run returns (the package's leak check
// would see it otherwise).
func TestHungCheckShutdown(t *testing.T) {
	t.Parallel()
	eachHungCheck(t, time.Minute, func(t *testing.T, iso *isolation, _ string) {
		_, pgid := iso.runs(t)
		iso.stopHung(t, "a check")
		if err := syscall.Kill(-pgid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("the hung check's process group %d is still there: %v", pgid, err)
		}
	})
}

// stopHung stops the renderer while what hangs (for a's command) and
// waits at most 3s for Run to return.
func (iso *isolation) stopHung(t *testing.T, what string) {
	t.Helper()
	h := iso.h
	start := time.Now()
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("Run did not return within 3s while %s hung", what)
	}
	t.Logf("Run returned %v after cancel", time.Since(start).Round(time.Millisecond))
}

// TestFirstRenderOneReloadApart (issue 8, with the checks apart from the
// loop): the first full render of a resource per app, each with a check
// on its staged file or on its installed file (a command per resource),
// lands in one go and costs one reload; every file is installed.
func TestFirstRenderOneReloadApart(t *testing.T) {
	t.Parallel()
	for kind, check := range map[string]string{"src": "test -s {{.src}}", "installed": "test -s {{.dest}}"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			log := filepath.Join(t.TempDir(), "reloads")
			dir, kvs := benchConfdir(t, 100, true, check, "echo reload >> "+log)
			r := newTestRenderer(dir)
			var wg sync.WaitGroup
			ctx, cancel := context.WithCancel(context.Background())
			defer wg.Wait()
			defer cancel()
			r.lanes = newLanes(r, &wg)
			r.store.Replace(kvs, 1, r.prefixes())
			r.applyDue(ctx, time.Now())
			for !r.sched.Idle() { // the loop's part
				select {
				case ld := <-r.lanes.landed:
					r.lanes.Land(ctx, time.Now(), ld)
				case d := <-r.lanes.done:
					r.lanes.Finish(ctx, time.Now(), d)
				case <-time.After(20 * time.Second):
					t.Fatal("first full render still pending after 20s")
				}
			}
			if b, err := os.ReadFile(log); err != nil || string(b) != "reload\n" {
				t.Errorf("reloads: %q, %v; want one", b, err)
			}
			for _, st := range r.states {
				if fi, err := os.Stat(st.res.Dest); err != nil || fi.Size() == 0 {
					t.Fatalf("%s not installed: %v", st.res.Dest, err)
				}
			}
		})
	}
}
