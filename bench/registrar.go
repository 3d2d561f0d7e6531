package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/internal/proc"
)

// registrarRuns measures the registrar as it ships: binary size, RSS, and
// app ready (its port accepts) → key visible in etcd, over opt.regRuns
// starts of `registrar -- demo-backend`.
func registrarRuns(ctx context.Context, opt *options, t *table) error {
	bin := filepath.Join(opt.bin, "registrar")
	fi, err := os.Stat(bin)
	if err != nil {
		return err
	}
	t.add("registrar binary size (make build)", mb, float64(fi.Size())).with("≤ 20 MB", "")
	e, dir, done, err := etcdAlone(ctx, opt, "registrar")
	if err != nil {
		return err
	}
	defer done()
	for i := range opt.regRuns {
		if err := registrarOnce(ctx, opt, t, e, dir, i); err != nil {
			return err
		}
	}
	return nil
}

func registrarOnce(ctx context.Context, opt *options, t *table, e *etcdProc, dir string, i int) error {
	port, err := proc.FreePort()
	if err != nil {
		return err
	}
	app := fmt.Sprintf("reg%d", i)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := e.kv.Watch(wctx, "/"+app+"_"+benchEnv+"/", clientv3.WithPrefix())
	p, err := startProc(dir, app, filepath.Join(opt.bin, "registrar"), "--app", app, "--env", benchEnv,
		"--endpoints", e.endpoint, "--ip", "127.0.0.1", "--port", strconv.Itoa(port),
		"--drain-timeout", "1s", "--stop-timeout", "5s", "--", filepath.Join(opt.bin, "demo-backend"))
	if err != nil {
		return err
	}
	defer stop(p, 15*time.Second)
	var ready time.Time
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	err = poll(ctx, 30*time.Second, time.Millisecond, "demo-backend listens", func() error {
		if !p.Running() {
			return fmt.Errorf("registrar exited: %s", tail(p))
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		ready = time.Now()
		return c.Close()
	})
	if err != nil {
		return err
	}
	var visible time.Time
	select {
	case resp := <-events:
		visible = time.Now()
		if err := resp.Err(); err != nil {
			return err
		}
	case <-time.After(30 * time.Second):
		return fmt.Errorf("registrar %d: key not visible after 30s: %s", i, tail(p))
	case <-ctx.Done():
		return ctx.Err()
	}
	rss, err := rssBytes(p.Pid(), "VmRSS")
	if err != nil {
		return err
	}
	t.add("registrar RSS (registered, idle)", mb, rss)
	t.dur("registrar app ready → key visible", visible.Sub(ready))
	return nil
}
