package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"
)

// TestFrameScanner: the guard finds every frame header whatever the
// chunks the bytes arrive in, and knows when they end with a whole frame.
func TestFrameScanner(t *testing.T) {
	var wire bytes.Buffer
	fr := http2.NewFramer(&wire, nil)
	_ = fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 14})
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x82}, EndStream: true, EndHeaders: true})
	_ = fr.WriteData(3, false, bytes.Repeat([]byte{7}, 300))
	_ = fr.WriteData(3, true, nil)
	_ = fr.WriteRSTStream(5, http2.ErrCodeCancel)
	_ = fr.WritePing(false, [8]byte{})
	want := []frameHead{{typ: 0x4, length: 6}, {typ: frameHeaders, flags: 0x5, stream: 1, length: 1}, {typ: 0x0, stream: 3, length: 300},
		{typ: 0x0, flags: 0x1, stream: 3}, {typ: frameRSTStream, stream: 5, length: 4}, {typ: 0x6, length: 8}}
	all := wire.Bytes()
	for _, chunk := range []int{1, 2, 5, 9, 10, 17, 64, 301, len(all)} {
		var s frameScanner
		var got []frameHead
		for b := all; len(b) > 0; {
			k := min(chunk, len(b))
			for p := b[:k]; len(p) > 0; {
				h, ok, rest := s.next(p)
				p = rest
				if ok {
					got = append(got, h)
				}
			}
			b = b[k:]
			if len(b) > 0 && s.atBoundary() && len(got) == 0 {
				t.Fatalf("chunk %d: at a boundary before the first frame ended", chunk)
			}
		}
		if !s.atBoundary() {
			t.Errorf("chunk %d: not at a boundary after whole frames", chunk)
		}
		if len(got) != len(want) {
			t.Fatalf("chunk %d: got %d frames %+v, want %+v", chunk, len(got), got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("chunk %d: frame %d is %+v, want %+v", chunk, i, got[i], want[i])
			}
		}
	}
}

// guardClient is a raw HTTP/2 client for the reset tests.
type guardClient struct {
	t    *testing.T
	nc   net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	henc *hpack.Encoder
}

func dialGuard(t *testing.T, addr string) *guardClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &guardClient{t: t, nc: nc, fr: http2.NewFramer(nc, nc)}
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := io.WriteString(nc, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := c.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return c
}

// call sends a Search on stream id.
func (c *guardClient) call(id uint32) error {
	c.hbuf.Reset()
	for _, f := range []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: "/milvus.proto.milvus.MilvusService/Search"}, {Name: ":authority", Value: "proxy"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"}} {
		_ = c.henc.WriteField(f)
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true}); err != nil {
		return err
	}
	b, err := proto.Marshal(search("coll", commonpb.ConsistencyLevel_Bounded, 0, false))
	if err != nil {
		c.t.Fatal(err)
	}
	return c.fr.WriteData(id, true, append([]byte{0, byte(len(b) >> 24), byte(len(b) >> 16), byte(len(b) >> 8), byte(len(b))}, b...))
}

// next reads frames until a GOAWAY (returned) or the end of stream id
// (nil); the connection closing first fails the test.
func (c *guardClient) next(id uint32) *http2.GoAwayFrame {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.t.Fatalf("reading: %v", err)
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			return f
		case *http2.MetaHeadersFrame:
			if f.StreamID == id && f.StreamEnded() {
				return nil
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return nil
			}
		}
	}
}

// TestResetBudget: a client that opens and resets calls faster than its
// budget is sent GOAWAY ENHANCE_YOUR_CALM by either engine (the grpc
// engine through its guard); one that resets only calls it saw answered,
// as grpc-go clients do with a bidi stream the server ended, is not; and
// other clients are served meanwhile.
func TestResetBudget(t *testing.T) {
	bothEngines(t, func(t *testing.T) {
		e := newEnv(t, func(o *Options) { o.RelayLimits.ResetsPerSecond = 5 })
		// Answered first, reset after: 3x the burst of 50, never closed.
		c := dialGuard(t, e.addr)
		for id := uint32(1); id < 300; id += 2 {
			if err := c.call(id); err != nil {
				t.Fatal(err)
			}
			if g := c.next(id); g != nil {
				t.Fatalf("call %d: GOAWAY %v %q", id, g.ErrCode, g.DebugData())
			}
			if err := c.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.call(301); err != nil {
			t.Fatal(err)
		}
		if g := c.next(301); g != nil {
			t.Fatalf("after 150 resets of answered calls: GOAWAY %v %q", g.ErrCode, g.DebugData())
		}

		// Reset before the answer: closed once the burst is spent.
		a := dialGuard(t, e.addr)
		var g *http2.GoAwayFrame
		go func() {
			for id := uint32(1); id < 400; id += 2 {
				if a.call(id) != nil || a.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
					return // closed under us
				}
			}
		}()
		for g == nil {
			g = a.next(0)
		}
		if g.ErrCode != http2.ErrCodeEnhanceYourCalm || string(g.DebugData()) != "too many stream resets" {
			t.Fatalf("GOAWAY %v %q, want ENHANCE_YOUR_CALM %q", g.ErrCode, g.DebugData(), "too many stream resets")
		}
		if _, err := e.client.Search(e.ctx(), search("coll", commonpb.ConsistencyLevel_Bounded, 0, false)); err != nil {
			t.Fatalf("another client's Search: %v", err)
		}

		// The abuser's address is penalised: its new connections take
		// turns 100ms apart, and a reconnect flood is refused past 1s of
		// turns; a connection that waits its turn is served.
		checkPenalised(t, e.addr, "an abuse close")
	})
}

// TestHeaderBlockBound: a CONTINUATION flood (a header block that never
// ends, CVE-2023-45288) is closed with GOAWAY ENHANCE_YOUR_CALM by either
// engine (the grpc engine through its guard, before grpc-go closes the
// connection silently), and other clients are served meanwhile.
func TestHeaderBlockBound(t *testing.T) {
	bothEngines(t, func(t *testing.T) {
		e := newEnv(t)
		c := dialGuard(t, e.addr)
		c.hbuf.Reset()
		for _, f := range []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
			{Name: ":path", Value: "/milvus.proto.milvus.MilvusService/Search"}, {Name: ":authority", Value: "proxy"}} {
			_ = c.henc.WriteField(f)
		}
		if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.hbuf.Bytes()}); err != nil {
			t.Fatal(err)
		}
		go func() {
			// 1000 frames of 5000 bytes: 5 MB, far past the bounds.
			frag := bytes.Repeat([]byte{0x40, 0x01, 'x', 0x01, 'y'}, 1000)
			for range 1000 {
				if c.fr.WriteContinuation(1, false, frag) != nil {
					return // closed under us
				}
			}
		}()
		// The relay answers GOAWAY ENHANCE_YOUR_CALM; grpc-go closes
		// the connection without a GOAWAY when the decoded list passes
		// its limit.
		_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		var g *http2.GoAwayFrame
		var err error
		for g == nil && err == nil {
			var f http2.Frame
			f, err = c.fr.ReadFrame()
			g, _ = f.(*http2.GoAwayFrame)
		}
		switch {
		case g != nil && (g.ErrCode != http2.ErrCodeEnhanceYourCalm || string(g.DebugData()) != "header block too large or too slow"):
			t.Fatalf("GOAWAY %v %q, want ENHANCE_YOUR_CALM %q", g.ErrCode, g.DebugData(), "header block too large or too slow")
		case g == nil && e.srv.engine != EngineGRPC:
			t.Fatalf("connection ended without GOAWAY: %v", err)
		case g == nil && errors.Is(err, os.ErrDeadlineExceeded):
			t.Fatal("the connection was not closed")
		}
		if _, err := e.client.Search(e.ctx(), search("coll", commonpb.ConsistencyLevel_Bounded, 0, false)); err != nil {
			t.Fatalf("another client's Search: %v", err)
		}
		// Counted as abuse either way: the address's next connections
		// take turns (relay.abuse_reconnect_interval apart), so of 40 at
		// once some are refused.
		checkPenalised(t, e.addr, "the flood was closed")
	})
}

// checkPenalised dials 40 connections at once from the address the
// proxy just closed for abuse: its reconnections take turns
// (relay.abuse_reconnect_interval apart) and a flood of them is refused
// past 1s of turns, so some are served and some refused.
func checkPenalised(t *testing.T, addr, after string) {
	t.Helper()
	var wg sync.WaitGroup
	var served, refused atomic.Int32
	for range 40 {
		wg.Go(func() {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer nc.Close()
			_, _ = io.WriteString(nc, http2.ClientPreface)
			_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			if f, err := http2.NewFramer(nil, nc).ReadFrame(); err == nil {
				if _, ok := f.(*http2.SettingsFrame); ok {
					served.Add(1)
				}
			} else {
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	if served.Load() == 0 || refused.Load() == 0 {
		t.Fatalf("40 reconnections at once after %s: %d served, %d refused; want some of each (the address penalised)", after, served.Load(), refused.Load())
	}
}
