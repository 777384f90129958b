// Wrapper module: CoreDNS with only the plugins the local cluster's Corefile uses
// (devcluster/node_config.py), the way CoreDNS documents building with a chosen plugin set.
// `go install github.com/coredns/coredns` compiles every plugin, the cloud providers' SDKs
// among them, which took most of its cold build time.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
)

// The plugins in the order CoreDNS's own plugin.cfg runs them.
func init() {
	dnsserver.Directives = []string{"bind", "health", "errors", "cache", "kubernetes"}
}

func main() {
	coremain.Run()
}
