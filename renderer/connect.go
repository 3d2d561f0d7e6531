package renderer

import (
	"context"
	"errors"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/cli"
)

// connect makes the etcd client. Without auth that never waits for etcd;
// with auth, clientv3.New logs in and fails while etcd is down or slow to
// answer, and the renderer waits for it as for any outage (its files stay
// as they are), retrying until ctx ends. A usage error, refused
// credentials and --onetime return at once.
func (r *Renderer) connect(ctx context.Context, cfg Config, endpoints []string) (*clientv3.Client, clientv3.Config, error) {
	for attempt := 0; ; attempt++ {
		c, cc, err := newClient(cfg, endpoints)
		var ue *cli.UsageError
		if err == nil || cfg.Onetime || errors.As(err, &ue) || errors.Is(err, rpctypes.ErrAuthFailed) {
			return c, cc, err
		}
		r.log.Warn("etcd unreachable at start, retrying", "err", err)
		if sleepCtx(ctx, backoff(attempt, 100*time.Millisecond, time.Second)) != nil {
			return nil, cc, err
		}
	}
}
