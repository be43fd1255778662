package multiproxy_test

import (
	"testing"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/testproc"
)

// The clusters and the proxies run as processes of the built binary
// (test/testproc).
type (
	simProc   = testproc.Sim
	proxyProc = testproc.Proxy
)

func startProxy(t testing.TB, root, name, config string) (*proxyProc, error) {
	return testproc.StartProxy(t, binary, root, name, config)
}
