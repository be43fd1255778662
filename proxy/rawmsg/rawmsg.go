// Package rawmsg holds a gRPC message as raw bytes, never decoded as a
// whole: the unit both of the proxy's engines carry (the grpc-go engine
// through Codec, the HTTP/2 relay in proxy/relay by assembling it from
// DATA frames), and what the proxy's routing code reads fields from.
package rawmsg

import (
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/encoding"
	// Registers the "proto" codec we delegate non-frame messages to.
	_ "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// Msg is one gRPC message carried as raw bytes, never decoded as a whole.
//
// Ownership: Data holds one reference to each of its buffers (taken in
// Unmarshal). Marshal hands gRPC a reference of its own (gRPC frees what
// Marshal returns once the message is written), except for a Msg marked
// Give, whose reference moves to gRPC: that is how a response returned
// from a unary handler is released after gRPC has sent it. Free drops the
// Msg's reference; it is safe to call more than once.
type Msg struct {
	Data mem.BufferSlice
	// Tail holds fields appended to the message (proto3: for a scalar
	// field the last occurrence wins), used to rewrite a read's
	// consistency fields without copying or re-encoding the rest.
	Tail    []byte
	TailBuf [48]byte
	Give    bool
	flat    []byte // contiguous copy, only for multi-buffer messages
	// Hdr and Trl are a backend's response headers and trailers, as the
	// relay engine received them.
	Hdr, Trl []hpack.HeaderField
	// Compressed: the relay received the message with the compressed flag.
	Compressed bool
	// Pooled is the pool buffer backing data, for the relay's assembler.
	Pooled *[]byte
}

// Bytes returns the message as one contiguous slice. A message received
// uncompressed is a single buffer, so this is normally free; a compressed
// one may span several and is copied once.
func (f *Msg) Bytes() []byte {
	switch len(f.Data) {
	case 0:
		return nil
	case 1:
		return f.Data[0].ReadOnlyData()
	}
	if f.flat == nil {
		f.flat = f.Data.Materialize()
	}
	return f.flat
}

// Len returns the message length including the tail.
func (f *Msg) Len() int { return f.Data.Len() + len(f.Tail) }

// Free drops the message's reference to its buffers; it is safe to call
// more than once.
func (f *Msg) Free() {
	if f.Data != nil {
		f.Data.Free()
		f.Data = nil
	}
	f.flat = nil
}

// FromBytes wraps bytes the proxy built itself (local answers).
func FromBytes(b []byte) *Msg {
	return &Msg{Data: mem.BufferSlice{mem.SliceBuffer(b)}, Give: true}
}

// Codec forwards Msgs as they are and leaves every other message
// (grpc.health.v1, tests) to the standard proto codec.
type Codec struct {
	proto encoding.CodecV2
}

// NewCodec returns the codec, registered with grpc-go under "proto".
func NewCodec() *Codec {
	return &Codec{proto: encoding.GetCodecV2("proto")}
}

// Name implements encoding.CodecV2.
func (c *Codec) Name() string { return "proto" }

// Marshal implements encoding.CodecV2.
func (c *Codec) Marshal(v any) (mem.BufferSlice, error) {
	f, ok := v.(*Msg)
	if !ok {
		return c.proto.Marshal(v)
	}
	if len(f.Tail) == 0 {
		if f.Give {
			out := f.Data
			f.Data = nil
			return out, nil
		}
		f.Data.Ref()
		return f.Data, nil
	}
	// A slice of its own each time: gRPC's writer reads (and frees) the
	// slice after Marshal returns, possibly while a retry to another
	// cluster marshals the same Msg again.
	out := make(mem.BufferSlice, 0, len(f.Data)+1)
	out = append(out, f.Data...)
	if !f.Give {
		f.Data.Ref()
	} else {
		f.Data = nil
	}
	return append(out, mem.SliceBuffer(f.Tail)), nil
}

// Unmarshal implements encoding.CodecV2.
func (c *Codec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*Msg)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	f.Free()
	data.Ref()
	f.Data = data
	return nil
}
