package nginxreload_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/haproxytest"
	"github.com/rollcall/rollcall/nginxreload"
)

// startHAProxy runs a private HAProxy with one frontend rendered.
func startHAProxy(t *testing.T) *haproxytest.Server {
	t.Helper()
	if testing.Short() {
		t.Skip("haproxy in -short")
	}
	s := haproxytest.New(t, haproxytest.Config{})
	writePart(t, s, "frontend rollcall\n    bind \"${ROLLCALL_BIND}\"\n    http-request return status 200\n")
	s.Start(t)
	return s
}

func writePart(t *testing.T, s *haproxytest.Server, text string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(s.Rendered, "rollcall.cfg"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func show(t *testing.T, s *haproxytest.Server) nginxreload.Procs {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	p, err := nginxreload.ShowProc(ctx, s.MasterSocket)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestReloadHAProxy: a reload is confirmed by a new worker generation, and
// the old one is gone by then.
func TestReloadHAProxy(t *testing.T) {
	t.Parallel()
	s := startHAProxy(t)
	before := show(t, s)
	res, err := nginxreload.ReloadHAProxy(t.Context(), nginxreload.HAProxyConfig{MasterSocket: s.MasterSocket})
	if err != nil {
		t.Fatal(err)
	}
	after := show(t, s)
	t.Logf("reload confirmed in %v: workers %v -> %v (sent %d)", res.Took, before.Workers, res.New, res.Sent)
	if !slices.Equal(res.Old, before.Workers) || len(res.New) == 0 || !slices.Equal(after.Workers, res.New) || after.Reloads != before.Reloads+1 {
		t.Errorf("result %+v; show proc before %+v, after %+v", res, before, after)
	}
	if len(res.Lasting) > 0 {
		t.Errorf("old workers %v still running at the end of an idle reload", res.Lasting)
	}
}

// TestReloadHAProxyBackToBack: two reloads sent right after each other are
// both applied; the second, sent while the master re-executes, is not lost.
func TestReloadHAProxyBackToBack(t *testing.T) {
	t.Parallel()
	s := startHAProxy(t)
	before := show(t, s)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = nginxreload.ReloadHAProxy(t.Context(), nginxreload.HAProxyConfig{MasterSocket: s.MasterSocket})
		})
		time.Sleep(20 * time.Millisecond) // the second lands in the first's re-exec: the case under test, not a wait
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if after := show(t, s); after.Reloads < before.Reloads+2 {
		t.Errorf("master reloads %d -> %d; want both reloads applied", before.Reloads, after.Reloads)
	}
}

// TestReloadHAProxyRefused: a configuration HAProxy cannot apply (its bind
// is taken) is a *HAProxyKeptOldError, and the old workers keep serving.
func TestReloadHAProxyRefused(t *testing.T) {
	t.Parallel()
	s := startHAProxy(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	before := show(t, s)
	writePart(t, s, "frontend rollcall\n    bind \"${ROLLCALL_BIND}\"\n    http-request return status 200\n"+
		"frontend taken\n    bind "+l.Addr().String()+"\n")
	_, err = nginxreload.ReloadHAProxy(t.Context(), nginxreload.HAProxyConfig{MasterSocket: s.MasterSocket})
	var kept *nginxreload.HAProxyKeptOldError
	if !errors.As(err, &kept) || !strings.Contains(err.Error(), "kept the old config") {
		t.Fatalf("reload with a taken bind: %v; want *HAProxyKeptOldError", err)
	}
	if after := show(t, s); !slices.Equal(after.Workers, before.Workers) || after.Failed == 0 {
		t.Errorf("show proc after a refused reload %+v; want workers %v and a failed count", after, before.Workers)
	}
}

// TestWaitHAProxyDropped: a confirmation without a sender reports a reload
// the master never started as ErrDropped.
func TestWaitHAProxyDropped(t *testing.T) {
	t.Parallel()
	s := startHAProxy(t)
	g, err := nginxreload.ObserveHAProxy(t.Context(), nginxreload.HAProxyConfig{MasterSocket: s.MasterSocket, Resend: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Wait(t.Context()); !errors.Is(err, nginxreload.ErrDropped) {
		t.Fatalf("Wait without a reload: %v; want ErrDropped", err)
	}
}
