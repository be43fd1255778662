package proxy

import (
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/encoding"
	// Registers the "proto" codec we delegate non-frame messages to.
	_ "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// frame is one gRPC message carried as raw bytes, never decoded as a whole.
//
// Ownership: data holds one reference to each of its buffers (taken in
// Unmarshal). Marshal hands gRPC a reference of its own (gRPC frees what
// Marshal returns once the message is written), except for a frame marked
// give, whose reference moves to gRPC: that is how a response frame returned
// from a unary handler is released after gRPC has sent it. free drops the
// frame's reference; it is safe to call more than once.
type frame struct {
	data mem.BufferSlice
	// tail holds fields appended to the message (proto3: for a scalar
	// field the last occurrence wins), used to rewrite a read's
	// consistency fields without copying or re-encoding the rest.
	tail    []byte
	tailBuf [48]byte
	parts   [4]mem.Buffer // backing for data+tail in Marshal, no allocation
	give    bool
	flat    []byte // contiguous copy, only for multi-buffer messages
	// hdr and trl are a backend's response headers and trailers, as the
	// relay engine received them.
	hdr, trl []hpack.HeaderField
	// compressed: the relay received the message with the compressed flag.
	compressed bool
	// pooled is the pool buffer backing data, for the relay's assembler.
	pooled *[]byte
}

// bytes returns the message as one contiguous slice. A message received
// uncompressed is a single buffer, so this is normally free; a compressed
// one may span several and is copied once.
func (f *frame) bytes() []byte {
	switch len(f.data) {
	case 0:
		return nil
	case 1:
		return f.data[0].ReadOnlyData()
	}
	if f.flat == nil {
		f.flat = f.data.Materialize()
	}
	return f.flat
}

// len returns the message length including the tail.
func (f *frame) len() int { return f.data.Len() + len(f.tail) }

func (f *frame) free() {
	if f.data != nil {
		f.data.Free()
		f.data = nil
	}
	f.flat = nil
}

// frameFromBytes wraps bytes the proxy built itself (local answers).
func frameFromBytes(b []byte) *frame {
	return &frame{data: mem.BufferSlice{mem.SliceBuffer(b)}, give: true}
}

// rawCodec forwards frames as they are and leaves every other message
// (grpc.health.v1, tests) to the standard proto codec.
type rawCodec struct {
	proto encoding.CodecV2
}

func newRawCodec() *rawCodec {
	return &rawCodec{proto: encoding.GetCodecV2("proto")}
}

func (c *rawCodec) Name() string { return "proto" }

func (c *rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	f, ok := v.(*frame)
	if !ok {
		return c.proto.Marshal(v)
	}
	if len(f.tail) == 0 {
		if f.give {
			out := f.data
			f.data = nil
			return out, nil
		}
		f.data.Ref()
		return f.data, nil
	}
	var out mem.BufferSlice
	if len(f.data)+1 <= len(f.parts) {
		out = f.parts[:0]
	}
	out = append(out, f.data...)
	if !f.give {
		f.data.Ref()
	} else {
		f.data = nil
	}
	return append(out, mem.SliceBuffer(f.tail)), nil
}

func (c *rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*frame)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	f.free()
	data.Ref()
	f.data = data
	return nil
}
