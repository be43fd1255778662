package bench

import (
	"fmt"
	"testing"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/sim"
)

func startSim(t *testing.T, o sim.Options) *sim.Cluster {
	t.Helper()
	c, err := sim.Start(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

// The driver against the simulated cluster: real Milvus request shapes
// (schema, index, load state, placeholder groups, query expressions) must
// be accepted, and a single cluster never misses a session's own write.
func TestRunAgainstSim(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a simulated cluster")
	}
	c := startSim(t, sim.Options{ClusterID: "a"})
	for _, tt := range []struct {
		name string
		mod  func(*Config)
	}{
		{"search eventually", func(c *Config) {}},
		{"mixed session", func(c *Config) {
			c.Workload, c.Consistency, c.ReadRatio, c.VerifyEvery = WorkloadMixed, Session, 0.7, 1
		}},
		// Strong reads wait for the next time tick (50 ms): fewer of them.
		{"query strong", func(c *Config) { c.Workload, c.Consistency, c.Setup, c.Ops = WorkloadQuery, Strong, SetupNone, 60 }},
		{"upsert", func(c *Config) { c.Workload, c.Batch, c.Setup = WorkloadUpsert, 4, SetupNone }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{
				Targets:     []Target{{Name: "a", Addr: c.Addr()}},
				Workload:    WorkloadSearch,
				Consistency: Eventually,
				Concurrency: 4,
				Ops:         300,
				Dim:         16,
				Preload:     500,
				Index:       "FLAT",
			}
			tt.mod(&cfg)
			rep, err := Run(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			tr := rep.Targets[0]
			if tr.Errors != 0 {
				t.Fatalf("errors %v: %v", tr.ErrorsByCode, tr.ErrorSamples)
			}
			checkLatency(t, "all", tr.Latency)
			if tr.Throughput <= 0 {
				t.Errorf("throughput %v", tr.Throughput)
			}
			if v := tr.Verify; v != nil && (v.Checks == 0 || v.Misses != 0) {
				t.Errorf("verify = %+v, want checks and no misses", v)
			}
		})
	}
}

// BenchmarkSimSearch measures searches straight to one simulated cluster
// (no proxy): the baseline of the overhead and read-scaling scenarios.
// Run: go test -run '^$' -bench SimSearch -benchtime 20000x ./bench
func BenchmarkSimSearch(b *testing.B) {
	for _, conc := range []int{1, 8} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			c, err := sim.Start(b.Context(), sim.Options{ClusterID: "a"})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Stop()
			cfg := Config{
				Targets: []Target{{Addr: c.Addr()}}, Workload: WorkloadSearch, Consistency: Eventually,
				Concurrency: conc, Ops: int64(max(b.N, conc)), Dim: 128, Preload: 10000, Index: "FLAT",
			}
			b.ResetTimer()
			rep, err := Run(b.Context(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			tr := rep.Targets[0]
			if tr.Errors > 0 {
				b.Fatalf("errors: %v", tr.ErrorsByCode)
			}
			b.ReportMetric(tr.Throughput, "searches/s")
			b.ReportMetric(tr.Latency.P50*1000, "p50-µs")
			b.ReportMetric(tr.Latency.P99*1000, "p99-µs")
		})
	}
}
