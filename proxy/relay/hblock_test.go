package relay

import (
	"bytes"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/net/http2"
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

// TestDecodedBlockCache: a cluster connection's header reader, fed what an
// HPACK encoder writes (repeated blocks, blocks that grow and churn the
// table), returns exactly the encoded fields every time, and serves a
// repeated block of table references from its cache.
func TestDecodedBlockCache(t *testing.T) {
	hr := newHeaderReader(1 << 20)
	hr.shared = true
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	hits := 0
	send := func(step string, fields []hpack.HeaderField) {
		t.Helper()
		buf.Reset()
		for _, f := range fields {
			_ = enc.WriteField(f)
		}
		block := slices.Clone(buf.Bytes())
		before := hr.dgen
		var cached []hpack.HeaderField
		for _, e := range hr.dcache {
			if e.gen == before && bytes.Equal(e.block, block) {
				cached = e.fields
			}
		}
		var wire bytes.Buffer
		fr := http2.NewFramer(&wire, &wire)
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		got, complete, err := hr.read(f)
		if err != nil || !complete {
			t.Fatalf("%s: read: %v complete=%v", step, err, complete)
		}
		if !slices.Equal(got, fields) {
			t.Fatalf("%s: got\n%v\nwant\n%v", step, got, fields)
		}
		if cached != nil {
			hits++
		}
	}
	hdr := []hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "content-type", Value: "application/grpc"}}
	trl := []hpack.HeaderField{{Name: "grpc-status", Value: "0"}, {Name: "grpc-message", Value: ""}}
	for i := range 40 {
		send("headers", hdr)
		send("trailers", trl)
		if i%5 == 0 {
			send("churn", []hpack.HeaderField{{Name: "grpc-status", Value: "14"},
				{Name: "grpc-message", Value: strconv.Itoa(i) + string(bytes.Repeat([]byte{'x'}, 900))}})
		}
	}
	if hits < 40 {
		t.Fatalf("%d cache hits over 80 repeated blocks", hits)
	}
}

// TestRequestTimeoutField: a request's grpc-timeout, written from the
// duration after the block (no string), decodes after the block's other
// fields, on a peer keeping HPACK state, with the block cache hit or not.
func TestRequestTimeoutField(t *testing.T) {
	var w h2writer
	w.init(nil, nil)
	dec := hpack.NewDecoder(4096, nil)
	fixed := []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":path", Value: "/m/Search"},
		{Name: "content-type", Value: "application/grpc"}}
	for i, d := range []time.Duration{0, time.Nanosecond, 1500 * time.Microsecond, 9 * time.Second, 3 * time.Hour, 1 << 62, 9*time.Second + 1} {
		w.hbuf.Reset()
		w.timeout, w.sendTimeout = d, i != 3 // one block without
		w.encodeBlock([][]hpack.HeaderField{fixed})
		if w.sendTimeout {
			t.Fatal("sendTimeout still set after the block")
		}
		got, err := dec.DecodeFull(w.hbuf.Bytes())
		if err != nil {
			t.Fatalf("%v: decode: %v", d, err)
		}
		want := slices.Clone(fixed)
		if i != 3 {
			want = append(want, hpack.HeaderField{Name: "grpc-timeout", Value: string(appendGRPCTimeout(nil, d))})
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%v: decoded %v, want %v", d, got, want)
		}
		if i != 3 {
			back, ok := parseGRPCTimeout(want[len(want)-1].Value)
			if !ok || (d > 0 && back < d) {
				t.Fatalf("%v: %q parses to %v, %v (want at least the timeout)", d, want[len(want)-1].Value, back, ok)
			}
		}
	}
}
