// Command etcd is the upstream etcd server (go.etcd.io/etcd/server/v3), built
// as a binary for the e2e control plane. It is what etcd's own root module
// main.go does; that module (go.etcd.io/etcd/v3) is not needed for it.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
