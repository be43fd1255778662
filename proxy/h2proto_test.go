package proxy

// Throwaway prototype: a minimal HTTP/2 frame relay for unary gRPC, to
// measure whether a frame-level design pays before building it for real.

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"sync"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

type protoStream struct {
	id     uint32
	path   string
	fields []hpack.HeaderField
	data   []byte
}

type protoConn struct {
	nc   net.Conn
	fr   *http2.Framer
	bw   *bufio.Writer
	wmu  sync.Mutex
	henc *hpack.Encoder
	hbuf bytes.Buffer
}

func newProtoConn(nc net.Conn) *protoConn {
	c := &protoConn{nc: nc, bw: bufio.NewWriterSize(nc, 32<<10)}
	c.fr = http2.NewFramer(c.bw, bufio.NewReaderSize(nc, 32<<10))
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = 1 << 20
	c.henc = hpack.NewEncoder(&c.hbuf)
	return c
}

func (c *protoConn) writeHeaders(id uint32, end bool, fields []hpack.HeaderField) error {
	c.hbuf.Reset()
	for _, f := range fields {
		c.henc.WriteField(f)
	}
	return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndStream: end, EndHeaders: true})
}

type protoUp struct {
	*protoConn
	mu      sync.Mutex
	next    uint32
	pending map[uint32]*protoCall
}

type protoCall struct {
	down   *protoConn
	downID uint32
	hdr    []hpack.HeaderField
	data   []byte
}

func dialProtoUp(addr string) (*protoUp, error) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	u := &protoUp{protoConn: newProtoConn(nc), next: 1, pending: map[uint32]*protoCall{}}
	u.bw.WriteString(http2.ClientPreface)
	u.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 4 << 20})
	u.fr.WriteWindowUpdate(0, 16<<20)
	u.bw.Flush()
	go u.readLoop()
	return u, nil
}

func (u *protoUp) readLoop() {
	for {
		f, err := u.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				u.wmu.Lock()
				u.fr.WriteSettingsAck()
				u.bw.Flush()
				u.wmu.Unlock()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				u.wmu.Lock()
				u.fr.WritePing(true, f.Data)
				u.bw.Flush()
				u.wmu.Unlock()
			}
		case *http2.MetaHeadersFrame:
			u.mu.Lock()
			c := u.pending[f.StreamID]
			u.mu.Unlock()
			if c == nil {
				continue
			}
			if !f.StreamEnded() {
				c.hdr = f.Fields
				continue
			}
			// Trailers: relay the whole response in one flush.
			u.mu.Lock()
			delete(u.pending, f.StreamID)
			u.mu.Unlock()
			d := c.down
			d.wmu.Lock()
			hdr := append(c.hdr, hpack.HeaderField{Name: HeaderCluster, Value: "b"})
			d.writeHeaders(c.downID, false, hdr)
			d.fr.WriteData(c.downID, false, c.data)
			d.writeHeaders(c.downID, true, f.Fields)
			d.bw.Flush()
			d.wmu.Unlock()
		case *http2.DataFrame:
			u.mu.Lock()
			c := u.pending[f.StreamID]
			u.mu.Unlock()
			if c != nil {
				c.data = append(c.data, f.Data()...)
			}
			if n := len(f.Data()); n > 0 {
				u.wmu.Lock()
				u.fr.WriteWindowUpdate(0, uint32(n))
				u.bw.Flush()
				u.wmu.Unlock()
			}
		}
	}
}

func (u *protoUp) send(c *protoCall, s *protoStream) {
	u.mu.Lock()
	id := u.next
	u.next += 2
	u.pending[id] = c
	u.mu.Unlock()
	u.wmu.Lock()
	fields := append([]hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"}, {Name: ":path", Value: s.path},
		{Name: ":authority", Value: "backend"}, {Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
	}, s.fields...)
	u.writeHeaders(id, false, fields)
	u.fr.WriteData(id, true, s.data)
	u.bw.Flush()
	u.wmu.Unlock()
}

func serveProtoRelay(b *testing.B, up *protoUp, inline bool) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { lis.Close() })
	work := make(chan func(), 64)
	for i := 0; i < 8; i++ {
		go func() {
			for f := range work {
				f()
			}
		}()
	}
	go func() {
		for {
			nc, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				c := newProtoConn(nc)
				pre := make([]byte, len(http2.ClientPreface))
				if _, err := io.ReadFull(nc, pre); err != nil {
					return
				}
				c.wmu.Lock()
				c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 4 << 20})
				c.fr.WriteWindowUpdate(0, 16<<20)
				c.bw.Flush()
				c.wmu.Unlock()
				streams := map[uint32]*protoStream{}
				for {
					f, err := c.fr.ReadFrame()
					if err != nil {
						return
					}
					switch f := f.(type) {
					case *http2.SettingsFrame:
						if !f.IsAck() {
							c.wmu.Lock()
							c.fr.WriteSettingsAck()
							c.bw.Flush()
							c.wmu.Unlock()
						}
					case *http2.PingFrame:
						if !f.IsAck() {
							c.wmu.Lock()
							c.fr.WritePing(true, f.Data)
							c.bw.Flush()
							c.wmu.Unlock()
						}
					case *http2.MetaHeadersFrame:
						s := &protoStream{id: f.StreamID}
						for _, hf := range f.Fields {
							if hf.Name == ":path" {
								s.path = hf.Value
							} else if hf.Name[0] != ':' && hf.Name != "content-type" && hf.Name != "te" {
								s.fields = append(s.fields, hf)
							}
						}
						streams[f.StreamID] = s
					case *http2.DataFrame:
						s := streams[f.StreamID]
						s.data = append(s.data, f.Data()...)
						if n := len(f.Data()); n > 0 {
							c.wmu.Lock()
							c.fr.WriteWindowUpdate(0, uint32(n))
							c.bw.Flush()
							c.wmu.Unlock()
						}
						if f.StreamEnded() {
							delete(streams, f.StreamID)
							call := &protoCall{down: c, downID: s.id}
							if inline {
								up.send(call, s)
							} else {
								work <- func() { up.send(call, s) }
							}
						}
					}
				}
			}()
		}
	}()
	return lis.Addr().String()
}

func init() {
	extraBenchChildren["relay-inline"] = func(backend string) string { return protoRelayChild(backend, true) }
	extraBenchChildren["relay-worker"] = func(backend string) string { return protoRelayChild(backend, false) }
}

func protoRelayChild(backend string, inline bool) string {
	up, err := dialProtoUp(backend)
	if err != nil {
		panic(err)
	}
	return serveProtoRelay(&testing.B{}, up, inline)
}

func BenchmarkProtoRelay(b *testing.B) {
	backend := startBenchBackend(b)
	for _, kind := range []string{"haproxy", "raw", "relay-inline", "relay-worker"} {
		addr, child := spawnBenchProxy(b, kind, backend)
		benchTarget(b, kind, addr, child)
	}
}
