package sim

import (
	"context"
	"runtime"
	"testing"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
)

// BenchmarkSearch: 10,000 vectors of dimension 128, top 10, one query per
// request, through gRPC on loopback, from GOMAXPROCS client goroutines.
// qps/core = 1e9 / (ns/op) / GOMAXPROCS is reported as a metric.
func BenchmarkSearch(b *testing.B) {
	for _, metric := range []string{"L2", "IP", "COSINE"} {
		b.Run(metric, func(b *testing.B) {
			c := startCluster(b, Options{ClusterID: "bench"})
			cli := rawClient(b, c)
			const dim, n = 128, 10000
			createCollection(b, cli, "bench", dim, 2, commonpb.ConsistencyLevel_Eventually, metric)
			for first := 0; first < n; first += 2000 {
				insertRows(b, cli, "bench", genRows(2000, dim, int64(first), int64(first)), dim)
			}
			queries := genRows(64, dim, 0, 99).vecs
			reqs := make([]*milvuspb.SearchRequest, len(queries))
			for i, q := range queries {
				reqs[i] = searchReq("bench", 10, metric, "", nil, q)
				reqs[i].ConsistencyLevel = commonpb.ConsistencyLevel_Eventually
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					res, err := cli.Search(context.Background(), reqs[i%len(reqs)])
					if err != nil || res.GetStatus().GetCode() != 0 || len(res.GetResults().GetScores()) != 10 {
						b.Errorf("search: %v %v", err, res.GetStatus())
						return
					}
					i++
				}
			})
			b.StopTimer()
			if b.Elapsed() > 0 {
				qps := float64(b.N) / b.Elapsed().Seconds()
				b.ReportMetric(qps/float64(runtime.GOMAXPROCS(0)), "qps/core")
			}
		})
	}
}

// BenchmarkSearchKernel is the brute-force scan alone (no gRPC), one core.
func BenchmarkSearchKernel(b *testing.B) {
	const dim, n = 128, 10000
	r := genRows(n, dim, 0, 1)
	col := &column{dim: dim}
	alive := make([]bool, n)
	for i, v := range r.vecs {
		col.vec = append(col.vec, v...)
		col.inv = append(col.inv, invNorm(v))
		alive[i] = true
	}
	q := genRows(1, dim, 0, 2).vecs[0]
	sel := newTopK(10, true)
	sp := &searchParams{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sel.reset()
		scanVectors(col, q, "L2", nil, alive, sel, sp)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "qps")
}
