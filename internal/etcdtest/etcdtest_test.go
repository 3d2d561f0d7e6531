package etcdtest

import (
	"context"
	"testing"
	"time"
)

func TestStartRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	s := Start(t)
	c := s.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Put(ctx, "/k", "v"); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	resp, err := c.Get(ctx, "/k")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("after restart Get(/k) = %v; want v", resp.Kvs)
	}
}
