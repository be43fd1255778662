package relay

import (
	"bytes"
	"slices"
	"strconv"
	"testing"

	"golang.org/x/net/http2/hpack"
)

// TestHeaderBlockCache: blocks encoded with the cache decode, on a peer
// that keeps HPACK state across them, to exactly the fields given (the
// volatile grpc-timeout after the rest), through cache hits, table
// growth, evictions and a table size change; and a repeated block does hit
// the cache.
func TestHeaderBlockCache(t *testing.T) {
	var w h2writer
	w.init(nil, nil)
	dec := hpack.NewDecoder(4096, nil)
	req := func(path, timeout string, extra ...hpack.HeaderField) [][]hpack.HeaderField {
		fixed := []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
			{Name: ":path", Value: path}, {Name: ":authority", Value: "a:19530"},
			{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"}}
		var vol []hpack.HeaderField
		if timeout != "" {
			vol = append(vol, hpack.HeaderField{Name: "grpc-timeout", Value: timeout})
		}
		return [][]hpack.HeaderField{fixed, vol, extra}
	}
	check := func(step string, groups [][]hpack.HeaderField) {
		t.Helper()
		w.hbuf.Reset()
		w.encodeBlock(groups)
		got, err := dec.DecodeFull(w.hbuf.Bytes())
		if err != nil {
			t.Fatalf("%s: decode: %v", step, err)
		}
		var want, vol []hpack.HeaderField
		for _, fs := range groups {
			for _, f := range fs {
				if volatileField(f) {
					vol = append(vol, f)
				} else {
					want = append(want, f)
				}
			}
		}
		want = append(want, vol...)
		if !slices.Equal(got, want) {
			t.Fatalf("%s: decoded\n%v\nwant\n%v", step, got, want)
		}
	}
	ua := hpack.HeaderField{Name: "user-agent", Value: "grpc-go/1.70"}
	for i := range 50 {
		check("search "+strconv.Itoa(i), req("/milvus.proto.milvus.MilvusService/Search", strconv.Itoa(9000+i)+"m", ua))
		check("query "+strconv.Itoa(i), req("/milvus.proto.milvus.MilvusService/Query", strconv.Itoa(i)+"u"))
		if i%7 == 0 {
			// Fresh values push older entries out of the 4 KiB table.
			check("churn "+strconv.Itoa(i), req("/x", "", hpack.HeaderField{Name: "x-big", Value: string(bytes.Repeat([]byte{'a' + byte(i%26)}, 1500))}))
		}
		switch i {
		case 30: // the peer shrinks the table, later grows it back
			w.henc.SetMaxDynamicTableSizeLimit(256)
			w.hgen++
			dec.SetAllowedMaxDynamicTableSize(256)
		case 40:
			w.henc.SetMaxDynamicTableSizeLimit(4096)
			w.henc.SetMaxDynamicTableSize(4096)
			w.hgen++
			dec.SetAllowedMaxDynamicTableSize(4096)
		}
	}
	// A repeated block with the table unchanged comes from the cache.
	g := req("/milvus.proto.milvus.MilvusService/Search", "1S", ua)
	check("warm", g)
	check("warm again", g)
	gen := w.hgen
	w.hbuf.Reset()
	w.encodeBlock(g)
	if w.hgen != gen {
		t.Fatalf("a repeated block changed the table generation")
	}
	hit := false
	for _, e := range w.hcache {
		if e.gen == gen && e.matches(g) {
			hit = true
		}
	}
	if !hit {
		t.Fatalf("a repeated block is not in the cache")
	}
}

// BenchmarkHeaderBlock: a repeated request header block, cached and with
// the plain encoder.
func BenchmarkHeaderBlock(b *testing.B) {
	g := [][]hpack.HeaderField{{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: "/milvus.proto.milvus.MilvusService/Search"}, {Name: ":authority", Value: "a:19530"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
		{Name: "user-agent", Value: "grpc-go/1.70"}, {Name: "grpc-timeout", Value: "9999m"}}}
	b.Run("cached", func(b *testing.B) {
		var w h2writer
		w.init(nil, nil)
		for range b.N {
			w.hbuf.Reset()
			w.encodeBlock(g)
		}
	})
	b.Run("encoder", func(b *testing.B) {
		var w h2writer
		w.init(nil, nil)
		for range b.N {
			w.hbuf.Reset()
			for _, f := range g[0] {
				_ = w.henc.WriteField(f)
			}
		}
	})
}
