package relay

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/proxy/rawmsg"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Fuzz targets for the relay's parsers of untrusted bytes: the DATA
// stream cut into gRPC messages (msgAssembler), header blocks
// (headerReader) and their validation (checkRequest). Seed corpora are in testdata/fuzz; `make test-fuzz`
// runs each for a few seconds.

// FuzzMsgAssembler: DATA cut anywhere gives back exactly the messages it
// holds, each whole, and never holds more than what arrived plus one
// first chunk.
func FuzzMsgAssembler(f *testing.F) {
	msg := func(compressed byte, body []byte) []byte {
		b := []byte{compressed, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[1:], uint32(len(body)))
		return append(b, body...)
	}
	f.Add(msg(0, []byte("hello")), uint16(1))
	f.Add(append(msg(0, nil), msg(1, bytes.Repeat([]byte{7}, 300))...), uint16(7))
	f.Add([]byte{0, 0x0f, 0xff, 0xff, 0xff, 1, 2, 3}, uint16(3))
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		const maxMsg = 1 << 20
		step := int(cut%4096) + 1
		var a msgAssembler
		var got []*rawmsg.Msg
		in := data
		for len(in) > 0 {
			n := min(step, len(in))
			msgs, err := a.append(in[:n], maxMsg)
			if err != nil {
				return // a claimed size over maxMsg, or a bad flag: refused
			}
			got = append(got, msgs...)
			in = in[n:]
			if a.cur != nil && cap(a.body) > max(len(a.body)*2, assemblerChunk, len(data)) {
				t.Fatalf("holds %d bytes for %d received", cap(a.body), len(a.body))
			}
		}
		// Re-encode what came out: it is a prefix of the input.
		var re []byte
		for _, m := range got {
			c := byte(0)
			if m.Compressed {
				c = 1
			}
			re = append(re, msg(c, m.Bytes())...)
		}
		if !bytes.HasPrefix(data, re) {
			t.Fatalf("messages do not re-encode to the input")
		}
	})
}

// FuzzHeaderReader: any header block, in HEADERS and CONTINUATION frames
// of any size, decodes within its bounds or is refused, never a panic.
func FuzzHeaderReader(f *testing.F) {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for _, hf := range requestHeaders("Search", "authorization", "Basic cm9vdDpNaWx2dXM=") {
		_ = enc.WriteField(hf)
	}
	f.Add(buf.Bytes(), uint16(0))
	f.Add(buf.Bytes(), uint16(5))
	f.Add([]byte{0x3f, 0xe1, 0x1f}, uint16(1))                               // dynamic table size update
	f.Add(bytes.Repeat([]byte{0x40, 0x01, 'x', 0x01, 'y'}, 100), uint16(50)) // literal x: y, many times
	f.Fuzz(func(t *testing.T, block []byte, split uint16) {
		const maxList = 4 << 10
		var wire bytes.Buffer
		fr := http2.NewFramer(&wire, &wire)
		n := len(block)
		if split > 0 {
			n = min(n, int(split))
		}
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:n], EndHeaders: n == len(block), EndStream: true})
		for rest := block[n:]; len(rest) > 0; {
			k := min(len(rest), max(int(split), 1))
			_ = fr.WriteContinuation(1, k == len(rest), rest[:k])
			rest = rest[k:]
		}
		h := newHeaderReader(maxList)
		for {
			frm, err := fr.ReadFrame()
			if err != nil {
				return
			}
			fields, complete, err := h.read(frm)
			if err != nil {
				return
			}
			if complete {
				size := 0
				for _, hf := range fields {
					size += len(hf.Name) + len(hf.Value) + 32
				}
				if size > maxList {
					t.Fatalf("a block of %d bytes decoded past the limit of %d", size, maxList)
				}
				checkRequest(fields)
				checkTrailers(fields)
				return
			}
		}
	})
}

// FuzzCheckRequest: any header fields are judged, never a panic; what
// passes is a POST with a gRPC content type and lower-case names.
func FuzzCheckRequest(f *testing.F) {
	f.Add(":method\x00POST\x00:scheme\x00http\x00:path\x00/x\x00content-type\x00application/grpc")
	f.Add(":method\x00GET\x00:path\x00/\x00X-Up\x00v")
	f.Add("te\x00gzip\x00:authority\x00a")
	f.Fuzz(func(t *testing.T, s string) {
		parts := bytes.Split([]byte(s), []byte{0})
		var fields []hpack.HeaderField
		for i := 0; i+1 < len(parts); i += 2 {
			fields = append(fields, hpack.HeaderField{Name: string(parts[i]), Value: string(parts[i+1])})
		}
		if v, _ := checkRequest(fields); v == headersOK {
			method, ct := "", ""
			for _, hf := range fields {
				for i := 0; i < len(hf.Name); i++ {
					if c := hf.Name[i]; 'A' <= c && c <= 'Z' {
						t.Fatalf("accepted upper-case name %q", hf.Name)
					}
				}
				switch hf.Name {
				case ":method":
					method = hf.Value
				case "content-type":
					ct = hf.Value
				}
			}
			if method != "POST" || !isGRPCContentType(ct) {
				t.Fatalf("accepted %q with content-type %q", method, ct)
			}
		}
	})
}

// requestHeaders are a well-formed gRPC request's headers for method, then
// extra as name, value pairs.
func requestHeaders(method string, extra ...string) []hpack.HeaderField {
	fs := []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: "/milvus.proto.milvus.MilvusService/" + method}, {Name: ":authority", Value: "proxy"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"}}
	for i := 0; i+1 < len(extra); i += 2 {
		fs = append(fs, hpack.HeaderField{Name: extra[i], Value: extra[i+1]})
	}
	return fs
}
