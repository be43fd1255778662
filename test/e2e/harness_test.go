// Package e2e proves the proxy's routing through its public interface: the
// demo topology (simulated clusters a = leader, b, c joined by replication)
// with the real proxy in front, driven by the official Go SDK. The
// topology, the proxy and the collection come from test/testenv.
package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/milvus-io/milvus/client/v2/milvusclient"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/app"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/config"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/sim"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/testenv"
)

const clusterHeader = "x-milvus-ha-cluster"

// env is one demo topology plus the proxy, torn down by t.Cleanup.
type env struct {
	clusters map[string]*sim.Cluster
	app      *app.App
}

type envOptions struct {
	alternatives int
	delay        time.Duration
	tune         func(*config.Config)
}

// startEnv starts a leader and o.alternatives alternatives replicating
// with o.delay, the proxy in front (its config adjusted by o.tune), and
// waits until the proxy is ready.
func startEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	te := testenv.Start(t, testenv.Options{
		Clusters: o.alternatives + 1,
		Sim:      func(so *sim.Options) { so.ReplicationDelay = o.delay },
		Config:   o.tune,
	})
	e := &env{clusters: map[string]*sim.Cluster{}, app: te.App}
	for _, c := range te.Sims {
		e.clusters[c.ID()] = c
	}
	return e
}

// recorder remembers which cluster served each call, from the response
// header the proxy adds.
type recorder struct {
	mu   sync.Mutex
	last map[string]string // method -> cluster of its last call
}

func (r *recorder) interceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		var md metadata.MD
		err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Header(&md))...)
		cluster := ""
		if v := md.Get(clusterHeader); len(v) > 0 {
			cluster = v[0]
		}
		r.mu.Lock()
		r.last[method] = cluster
		r.mu.Unlock()
		return err
	}
}

// served returns the cluster that served the last call of a method
// (short name, e.g. "Search").
func (r *recorder) served(method string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last["/milvus.proto.milvus.MilvusService/"+method]
}

// client connects the Go SDK to the proxy with a header recorder.
func (e *env) client(t *testing.T) (*milvusclient.Client, *recorder) {
	t.Helper()
	rec := &recorder{last: map[string]string{}}
	c := testenv.Connect(t, e.app.Addr(), &milvusclient.ClientConfig{
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(rec.interceptor())},
	})
	return c, rec
}
