// Package multiproxy_test runs three milvus-ha-proxy `serve` processes
// that share one etcd arbiter (arbiter.etcd) in front of three simulated
// Milvus clusters a -> b, c, each a `milvus-ha-proxy sim` process. etcd is
// the embedded server (go.etcd.io/etcd/server/v3/embed) inside the test
// process; every proxy reaches it through a TCP relay of its own, which a
// test closes to cut that one proxy off etcd.
//
// With writers running through all three proxies it checks that a lost
// leader leads to exactly one force promotion (counted on the clusters),
// that every proxy routes writes to the same new leader within a bound,
// that a deciding proxy killed in the middle of a failover is replaced by
// one that finishes it, and that a proxy cut off from etcd never promotes
// and holds, then refuses, writes once its lease may have expired; then a
// history check: no two clusters took writes in the same epoch and no
// acknowledged write that reached the new leader was lost.
//
// MHP_MULTIPROXY_LONG=1 adds the slower scenarios (the decider killed in
// the middle of a failover). MHP_ETCD_BIN=path runs that etcd binary
// (e.g. /usr/bin/etcd of Debian's etcd-server, 3.4) instead of the
// embedded server. MHP_BIN=path uses that binary instead of building one.
package multiproxy_test

import (
	"os"
	"testing"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/testproc"
)

// binary is the milvus-ha-proxy built once for the whole suite.
var binary string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int { return testproc.RunWithBinary(m, "mhp-multiproxy-", &binary) }
