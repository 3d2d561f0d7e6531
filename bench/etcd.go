package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/rollcall/rollcall/embedetcd"
	"github.com/rollcall/rollcall/etcdclient"
	"github.com/rollcall/rollcall/internal/proc"
	"github.com/rollcall/rollcall/registry"
)

// serveEtcd is the harness re-executed as `bench serve-etcd DIR ADDR`: a
// real etcd (fsync on) in a process of its own, so its CPU and memory are
// measured apart from the renderer's and the harness's.
func serveEtcd(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: bench serve-etcd DIR HOST:PORT")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sctx, cancel := context.WithTimeout(ctx, embedetcd.StartTimeout)
	defer cancel()
	s, err := embedetcd.Start(sctx, embedetcd.Config{Dir: args[0], ClientAddr: args[1]})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer s.Close()
	fmt.Println("ready", s.Endpoint)
	select {
	case <-ctx.Done():
		return 0
	case err := <-s.Err():
		fmt.Fprintln(os.Stderr, "etcd:", err)
		return 1
	}
}

// etcdProc is the etcd child and a client of it.
type etcdProc struct {
	*proc.Proc
	endpoint string
	kv       *clientv3.Client
}

func startEtcd(ctx context.Context, dir string) (*etcdProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	port, err := proc.FreePort()
	if err != nil {
		return nil, err
	}
	ep := fmt.Sprintf("127.0.0.1:%d", port)
	p, err := startProc(dir, "etcd", self, "serve-etcd", filepath.Join(dir, "etcd"), ep)
	if err != nil {
		return nil, err
	}
	e := &etcdProc{Proc: p, endpoint: ep}
	if e.kv, err = newClient(ep); err != nil {
		stop(p, 5*time.Second)
		return nil, err
	}
	err = poll(ctx, embedetcd.StartTimeout, 20*time.Millisecond, "etcd ready", func() error {
		if !p.Running() {
			return fmt.Errorf("exited: %s", tail(p))
		}
		c, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := e.kv.Get(c, "/_ready")
		return err
	})
	if err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

// etcdAlone starts etcd in a temp dir of its own, for a part that needs
// nothing else; done stops it and removes the dir (unless --keep).
func etcdAlone(ctx context.Context, opt *options, name string) (e *etcdProc, dir string, done func(), err error) {
	if dir, err = os.MkdirTemp(opt.work, name+"-"); err != nil {
		return nil, "", nil, err
	}
	done = func() {
		if e != nil {
			e.close()
		}
		if !opt.keep {
			note("remove work dir", os.RemoveAll(dir))
		}
	}
	if e, err = startEtcd(ctx, dir); err != nil {
		done()
		return nil, "", nil, err
	}
	return e, dir, done, nil
}

func newClient(ep string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
}

func (e *etcdProc) close() {
	note("etcd client", etcdclient.Close(e.kv))
	stop(e.Proc, 10*time.Second)
}

// ackWatch follows one renderer's acknowledgement key: the renderer
// publishes revision R only once nginx serves everything up to R, so the
// time an ack arrives is when a change became live.
type ackWatch struct {
	mu   sync.Mutex
	acks []ack
	wg   sync.WaitGroup
	stop context.CancelFunc
}

type ack struct {
	rev int64
	at  time.Time
}

func watchAcks(ctx context.Context, kv *clientv3.Client, id string) *ackWatch {
	ctx, cancel := context.WithCancel(ctx)
	a := &ackWatch{stop: cancel}
	ch := kv.Watch(clientv3.WithRequireLeader(ctx), registry.RendererKey("", id))
	a.wg.Go(func() {
		for resp := range ch {
			now := time.Now()
			for _, ev := range resp.Events {
				var v registry.Ack
				if ev.Type != clientv3.EventTypePut || json.Unmarshal(ev.Kv.Value, &v) != nil {
					continue
				}
				a.mu.Lock()
				a.acks = append(a.acks, ack{rev: v.Revision, at: now})
				a.mu.Unlock()
			}
		}
	})
	return a
}

func (a *ackWatch) close() { a.stop(); a.wg.Wait() }

// ackedAt is when the first ack at or past rev arrived.
func (a *ackWatch) ackedAt(rev int64) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, x := range a.acks {
		if x.rev >= rev {
			return x.at, true
		}
	}
	return time.Time{}, false
}

// waitAck waits until rev is acknowledged and returns when.
func (a *ackWatch) waitAck(ctx context.Context, rev int64, timeout time.Duration) (time.Time, error) {
	var at time.Time
	err := poll(ctx, timeout, 5*time.Millisecond, fmt.Sprintf("renderer ack of revision %d", rev), func() error {
		var ok bool
		if at, ok = a.ackedAt(rev); !ok {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	return at, err
}
