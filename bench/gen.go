package bench

import (
	"encoding/binary"
	"math"
	"math/rand/v2"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"google.golang.org/protobuf/proto"
)

// Seeds for the different streams derived from Config.Seed, so that (for
// example) the query vectors do not repeat the data vectors.
const (
	streamData    = 0x6461746100000000 // "data"
	streamQueries = 0x7175657200000000 // "quer"
	streamWrites  = 0x7772697400000000 // "writ"
	streamWorker  = 0x776f726b00000000 // "work"
)

// dataVector returns row i of the generated data set: a deterministic
// function of (seed, i), so preloads can run in parallel and two targets
// set up with the same seed hold the same data.
func dataVector(seed uint64, i int, dim int, dst []float32) []float32 {
	r := rand.NewPCG(seed, streamData^uint64(i))
	dst = dst[:0]
	for range dim {
		dst = append(dst, uniform(r))
	}
	return dst
}

// uniform draws a float32 in [0, 1) from the top 24 bits, which is exactly
// representable, so generated vectors are identical on every platform.
func uniform(r *rand.PCG) float32 {
	return float32(r.Uint64()>>40) / (1 << 24)
}

// vectorSource yields data vectors: rows of an .fvecs file (cycled), or the
// seeded generator.
type vectorSource struct {
	seed uint64
	dim  int
	file [][]float32
}

func (s vectorSource) row(i int, dst []float32) []float32 {
	if len(s.file) > 0 {
		return append(dst[:0], s.file[i%len(s.file)]...)
	}
	return dataVector(s.seed, i, s.dim, dst)
}

// poolSize bounds a pre-built pool to about 64 MiB of float32s.
func poolSize(vectorsPerEntry, dim int) int {
	n := (64 << 20) / max(1, 4*vectorsPerEntry*dim)
	return min(1024, max(16, n))
}

// queryPool pre-serializes search inputs so the hot loop only picks one:
// each entry is a PlaceholderGroup of nq float vectors, as Milvus's SDKs
// send it (tag "$0", little-endian float32 bytes).
func queryPool(src vectorSource, nq int) [][]byte {
	n := poolSize(nq, src.dim)
	r := rand.New(rand.NewPCG(src.seed, streamQueries))
	out := make([][]byte, n)
	vec := make([]float32, 0, src.dim)
	for i := range out {
		ph := &commonpb.PlaceholderValue{Tag: "$0", Type: commonpb.PlaceholderType_FloatVector}
		for range nq {
			if len(src.file) > 0 {
				vec = append(vec[:0], src.file[r.IntN(len(src.file))]...)
			} else {
				vec = vec[:0]
				for range src.dim {
					vec = append(vec, float32(r.Uint64()>>40)/(1<<24))
				}
			}
			ph.Values = append(ph.Values, floatBytes(vec))
		}
		b, err := proto.Marshal(&commonpb.PlaceholderGroup{Placeholders: []*commonpb.PlaceholderValue{ph}})
		if err != nil {
			panic(err) // a well-formed message always marshals
		}
		out[i] = b
	}
	return out
}

func floatBytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// writePool is a flat array of (n + batch) vectors; a write of batch rows
// takes the contiguous slice starting at a random vector, so the hot loop
// never generates or copies vectors.
type writePool struct {
	dim  int
	n    int
	flat []float32
}

func newWritePool(src vectorSource, batch int) writePool {
	n := poolSize(1, src.dim)
	flat := make([]float32, 0, (n+batch)*src.dim)
	vec := make([]float32, 0, src.dim)
	for i := range n + batch {
		if len(src.file) > 0 {
			vec = append(vec[:0], src.file[i%len(src.file)]...)
		} else {
			vec = dataVector(src.seed^streamWrites, i, src.dim, vec)
		}
		flat = append(flat, vec...)
	}
	return writePool{dim: src.dim, n: n, flat: flat}
}

func (p writePool) batch(r *rand.Rand, rows int) []float32 {
	start := r.IntN(p.n) * p.dim
	return p.flat[start : start+rows*p.dim]
}

// Inserted rows get keys no preload and no other worker, target or run
// uses, so a read-your-writes check can only find the row it wrote:
//
//	bit 62: set (preloaded keys are small)
//	bits 48-61: run nonce (random per run)
//	bits 42-47: target index
//	bits 32-41: worker index
//	bits 0-31: the worker's sequence number
func insertKey(nonce uint64, target, worker int, seq uint32) int64 {
	return int64(1<<62 | (nonce&(1<<14-1))<<48 | uint64(target&63)<<42 | uint64(worker&1023)<<32 | uint64(seq))
}
