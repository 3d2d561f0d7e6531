// Package rolling_test proves, with real processes, that a rolling deploy
// behind nginx loses no request: real etcd (internal/etcdtest), a real
// renderer process, a real nginx (internal/nginxtest) and every backend a
// `registrar -- demo-backend` process, under a load of 32 concurrent clients.
// The programs are built once by internal/proctest, as `make build` does.
package rolling_test

import (
	"path/filepath"
	"testing"

	"github.com/rollcall/rollcall/internal/proctest"
)

var (
	bins     proctest.Binaries // built by TestMain
	repoRoot = filepath.Join("..", "..")
)

func TestMain(m *testing.M) { proctest.Main(m, &bins) }
