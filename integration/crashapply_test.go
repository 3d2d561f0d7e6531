package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/etcdtest"
	"github.com/rollcall/rollcall/internal/proc"
	"github.com/rollcall/rollcall/internal/proctest"
	"github.com/rollcall/rollcall/internal/waitfor"
	"github.com/rollcall/rollcall/registry"
)

// TestKilledDuringReload: the renderer binary and its reload_cmd are killed
// with SIGKILL (systemd's KillMode=control-group) while a slow reload_cmd
// runs, the new file already installed. The restarted renderer reloads that
// resource although the file already holds its output, and acknowledges the
// change only after that reload ended.
func TestKilledDuringReload(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs etcd and the renderer")
	}
	bins.Need(t)
	etcd := etcdtest.Start(t)
	kv := etcd.Client(t)
	dir, out := t.TempDir(), t.TempDir()
	mkdir(t, filepath.Join(dir, "conf.d"), filepath.Join(dir, "templates"))
	log, slow := filepath.Join(out, "reloads.log"), filepath.Join(out, "slow")
	reload := filepath.Join(dir, "reload.sh")
	writeFile(t, reload, fmt.Sprintf("#!/bin/sh\necho start >> %[1]s\nif [ -e %[2]s ]; then sleep 60; fi\necho done >> %[1]s\n", log, slow), 0o755)
	dest := filepath.Join(out, "up.conf")
	writeFile(t, filepath.Join(dir, "templates", "up.tmpl"), "{{range services}}{{.Name}}:{{range .Instances}} {{.}}{{end}}\n{{end}}", 0o644)
	writeFile(t, filepath.Join(dir, "conf.d", "up.toml"), fmt.Sprintf("[template]\nsrc = \"up.tmpl\"\ndest = %q\nkeys = [\"/\"]\nreload_cmd = %q\n", dest, reload), 0o644)
	put := func(k, v string) int64 {
		resp, err := kv.Put(context.Background(), k, v)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	count := func(word string) int {
		b, _ := os.ReadFile(log)
		return strings.Count(string(b), word+"\n")
	}
	ack := func() int64 {
		resp, err := kv.Get(context.Background(), registry.RendererKey("", "crash"))
		if err != nil || len(resp.Kvs) == 0 {
			return 0
		}
		var a registry.Ack
		if json.Unmarshal(resp.Kvs[0].Value, &a) != nil {
			return 0
		}
		return a.Revision
	}
	args := []string{bins.Path("renderer"), "--confdir", dir, "--endpoints", etcd.Endpoint, "--id", "crash", "--command-timeout", "2m"}
	put("/web_prod/10.0.0.1-80", "10.0.0.1:80")
	first := proctest.Start(t, "renderer-1", nil, time.Second, args...)
	waitfor.Cond(t, 10*time.Second, "first reload", func() error {
		if count("done") != 1 {
			return fmt.Errorf("%d reloads done", count("done"))
		}
		return nil
	})
	writeFile(t, slow, "", 0o644)
	changeRev := put("/web_prod/10.0.0.2-80", "10.0.0.2:80")
	waitfor.Cond(t, 10*time.Second, "slow reload running", func() error {
		if count("start") != 2 {
			return fmt.Errorf("%d reloads started", count("start"))
		}
		return nil
	})
	// kill -9 the renderer and everything it started (the reload runs in
	// its own process group).
	// Stopped first, then killed: killed one by one in any order, the sleep
	// could die before its shell, which would then finish the reload.
	kids := proc.Descendants(first.Pid())
	for _, pid := range kids {
		syscall.Kill(pid, syscall.SIGSTOP)
	}
	if err := first.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, pid := range kids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	proctest.Wait(t, first, 5*time.Second)
	want := "web_prod: 10.0.0.1:80 10.0.0.2:80\n"
	if got := read(t, dest); got != want {
		t.Fatalf("installed before the kill: %q; want %q", got, want)
	}
	if count("done") != 1 {
		t.Fatalf("the killed reload finished")
	}
	if a := ack(); a >= changeRev {
		t.Fatalf("ack %d covers the change %d before any reload", a, changeRev)
	}
	if err := os.Remove(slow); err != nil {
		t.Fatal(err)
	}
	second := proctest.Start(t, "renderer-2", nil, 10*time.Second, args...)
	var early []int64
	waitfor.Cond(t, 10*time.Second, "reload after the restart", func() error {
		if err := second.Exited(); err != nil {
			return err
		}
		if a := ack(); a >= changeRev && count("done") < 2 {
			early = append(early, a)
		}
		if count("done") != 2 {
			return fmt.Errorf("%d reloads done", count("done"))
		}
		return nil
	})
	if len(early) > 0 {
		t.Errorf("acknowledged %v before the reload after the restart", early)
	}
	waitfor.Cond(t, 10*time.Second, "ack after the reload", func() error {
		if a := ack(); a < changeRev {
			return fmt.Errorf("ack %d; want >= %d", a, changeRev)
		}
		return nil
	})
	ents, _ := os.ReadDir(out)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".rollcall-") || strings.HasSuffix(e.Name(), ".rollcall.pending") {
			t.Errorf("left next to dest: %s", e.Name())
		}
	}
}
