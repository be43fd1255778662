package bench

import (
	"fmt"
	"testing"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/bench/benchtest"
)

// BenchmarkDriverSearch is the harness's own ceiling: searches per second
// it can drive against a server that does no work, by connection count.
// Run: go test -run '^$' -bench DriverSearch ./bench
func BenchmarkDriverSearch(b *testing.B) {
	for _, conns := range []int{1, 4} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			f := benchtest.New("b")
			addr, stop, err := f.Start()
			if err != nil {
				b.Fatal(err)
			}
			defer stop()
			cfg := baseConfig(addr)
			cfg.Concurrency, cfg.Conns, cfg.Dim, cfg.Ops = 8, conns, 128, int64(max(b.N, 1))
			b.ReportAllocs()
			b.ResetTimer()
			rep, err := Run(b.Context(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(rep.Targets[0].Throughput, "ops/s")
			b.ReportMetric(rep.Targets[0].Latency.P99*1000, "p99-µs")
		})
	}
}
