package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/rollcall/rollcall/embedetcd"
	"github.com/rollcall/rollcall/internal/proc"
)

// BinaryEnv names an etcd server binary that Start runs instead of the
// embedded server: `make test-etcd35` points it at etcd v3.5.23, the oldest
// server rollcall supports, and runs the tests that talk to etcd against it.
const BinaryEnv = "ROLLCALL_TEST_ETCD"

// startBinary runs the etcd binary bin as one member on s's ports and data
// dir and waits until it answers; the returned func stops it.
func (s *Server) startBinary(bin string) (func(), error) {
	p, err := proc.Start(proc.Spec{Name: "etcd", Log: filepath.Join(s.t.TempDir(), "etcd.log"), Args: []string{bin,
		"--name", "rollcall", "--data-dir", s.dir, "--unsafe-no-fsync", "--log-level", "error",
		"--listen-client-urls", "http://" + s.client, "--advertise-client-urls", "http://" + s.client,
		"--listen-peer-urls", "http://" + s.peer, "--initial-advertise-peer-urls", "http://" + s.peer,
		"--initial-cluster", "rollcall=http://" + s.peer}})
	if err != nil {
		return nil, err
	}
	stop := func() {
		// Killed, as the embedded server stops: at once. On SIGTERM etcd
		// v3.5 waits for its clients' watch streams to end. What it wrote is
		// in the page cache, so the data dir keeps it for Restart.
		var ee *exec.ExitError
		if err := p.Stop(syscall.SIGKILL, 5*time.Second); err != nil &&
			!(errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL) {
			s.t.Errorf("stop etcd %s: %v", bin, err)
		}
	}
	if err := s.waitServing(p); err != nil {
		p.Stop(syscall.SIGKILL, 5*time.Second) // it failed: how it ends says nothing more
		return nil, fmt.Errorf("etcd %s: %w\n%s", bin, err, p.Tail(20))
	}
	return stop, nil
}

// waitServing waits until the server answers a read, within
// embedetcd.StartTimeout.
func (s *Server) waitServing(p *proc.Proc) error {
	ctx, cancel := context.WithTimeout(context.Background(), embedetcd.StartTimeout)
	defer cancel()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{s.client}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer c.Close()
	for {
		if err := p.Exited(); err != nil {
			return err
		}
		rctx, rcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_, err := c.Status(rctx, s.client) // needs no user when auth is on
		rcancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not serving: %w (last: %v)", ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// binary is the etcd binary to run instead of the embedded server, if any.
func binary() string { return os.Getenv(BinaryEnv) }
