// Command etcd runs the etcd server from go.etcd.io/etcd/server/v3 (the same code as the
// upstream etcd binary) at the version k8s.io/kubernetes pins, so the API server's storage
// is built from Go modules like the rest of the control plane.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
