// Command etcd35 is etcd's own server at v3.5.23, the oldest server
// rollcall supports: `make test-etcd35` builds it and runs the tests
// against it (ROLLCALL_TEST_ETCD). A module of its own, so rollcall itself
// keeps building against etcd v3.6.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
