package chaos_test

import (
	"testing"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/testproc"
)

// The clusters and the proxy run as processes of the built binary
// (test/testproc).
type (
	simProc   = testproc.Sim
	proxyProc = testproc.Proxy
)

func newProc(t testing.TB, name, logPath string) *testproc.Proc {
	return testproc.NewProc(t, binary, name, logPath)
}

func startProxy(t testing.TB, root, config string) (*proxyProc, error) {
	return testproc.StartProxy(t, binary, root, "proxy", config)
}
