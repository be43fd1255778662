package proxy

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/proxy/relay"
	"golang.org/x/net/http2"
	"google.golang.org/grpc/credentials"
)

// The grpc engine's guard against the HTTP/2 rapid reset attack
// (CVE-2023-44487). grpc-go (since 1.58) bounds the handlers running for
// one connection by MaxConcurrentStreams, but it still starts a handler for
// every stream a client opens and resets at once, so one client that does
// so in a loop takes the CPU from every other client. grpc-go has no reset
// budget of its own; the relay engine has (RelayLimits.ResetsPerSecond).
// The guard gives the grpc engine the same one: it sits between grpc-go and
// the connection (after TLS, as a credentials.TransportCredentials wrapper,
// so it sees HTTP/2 frames), follows the frame boundaries of both
// directions from the 9-byte frame headers as the bytes pass (RFC 9113
// section 4.1; payloads are skipped, nothing is copied), and counts the
// client's RST_STREAM frames for streams the server had not ended. Past
// the budget it writes GOAWAY ENHANCE_YOUR_CALM between two of grpc-go's
// frames, as Go's net/http2 and the relay do, and closes the connection.
//
// It bounds a header block (HEADERS and its CONTINUATION frames) the way
// the relay's header reader does, by encoded bytes, frames and time (the
// CONTINUATION flood of CVE-2023-45288). grpc-go's own bound (its x/net
// Framer stops at the decoded header list limit) closes such a connection
// too, but silently: the client reconnects at once and floods again. So a
// connection closed while a client's header block is open and past one
// frame's worth of bytes counts as abuse: the address's reconnections are
// penalised as the relay's are. (grpc-go's decoded limit is usually met
// first; the guard's own bounds catch blocks that decode small.)

// guardCreds wraps the server's transport credentials so that every
// connection grpc-go serves passes through a guardConn.
type guardCreds struct {
	credentials.TransportCredentials
	rate, burst float64
	// maxBlock bounds a header block's encoded bytes: the header list
	// limit (SETTINGS_MAX_HEADER_LIST_SIZE) plus the relay's margin.
	maxBlock int
	onClose  func(reason string)
	// penalty slows down the reconnections of an address whose
	// connection the guard closed, as the relay's does (nil: off).
	penalty *relay.PeerPenalty
}

// errPenalised is the handshake error of a connection the penalty refused.
var errPenalised = errors.New("milvus-ha-proxy: connection refused: its address was closed for abuse a moment ago")

func (g *guardCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	// grpc-go handshakes each connection on a goroutine of its own
	// (under ConnectionTimeout): the penalty's wait holds no one else.
	if !g.penalty.Hold(raw) {
		if g.onClose != nil {
			g.onClose("penalty")
		}
		return nil, nil, errPenalised
	}
	c, ai, err := g.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return c, ai, err
	}
	gc := newGuardConn(c, g.rate, g.burst, g.onClose)
	gc.penalty = g.penalty
	gc.maxBlock = g.maxBlock
	return gc, ai, nil
}

func (g *guardCreds) Clone() credentials.TransportCredentials {
	c := *g
	c.TransportCredentials = g.TransportCredentials.Clone()
	return &c
}

// errGuardClosed is what grpc-go reads and writes once the guard closed
// the connection.
var errGuardClosed = errors.New("milvus-ha-proxy: connection closed for abuse (too many stream resets, or a header block too large or too slow)")

// guardConn is one client connection of the grpc engine under the guard.
// Read is called by grpc-go's reader goroutine only; Write by its writer
// (loopy) goroutine, under wmu, which the reader takes (TryLock, never
// waiting on a blocked write) to put its GOAWAY between two frames.
type guardConn struct {
	net.Conn
	rate, burst float64
	onClose     func(reason string)
	penalty     *relay.PeerPenalty

	// The reader's state.
	rd        frameScanner
	tokens    float64
	last      time.Time
	maxStream uint32 // the highest stream a client HEADERS opened
	// The header block being read (HEADERS without END_HEADERS, then
	// CONTINUATION frames): its encoded bytes, frames and start.
	maxBlock    int // 0: unbounded
	blockBytes  int
	blockFrames int
	blockStart  time.Time
	// openBlock is blockBytes while the block is open, else 0, for Close
	// (called on another goroutine than Read).
	openBlock atomic.Int64
	// abused is set once the connection was counted as abusive.
	abused atomic.Bool

	wmu  sync.Mutex
	wr   frameScanner // under wmu
	dead bool         // under wmu: the guard closed the connection
	// ended are the last streams the server ended (trailers or
	// RST_STREAM), a ring written under wmu, read by the reader: a
	// client's reset of one of them is not a reset of an unanswered
	// call (grpc-go clients reset a bidi stream the server ended
	// before they half-closed it).
	ended     [64]atomic.Uint32
	endedNext int
}

func newGuardConn(c net.Conn, rate, burst float64, onClose func(string)) *guardConn {
	g := &guardConn{Conn: c, rate: rate, burst: burst, onClose: onClose}
	g.rd.skip = len(http2.ClientPreface)
	return g
}

// HTTP/2 frame types and flags the guard looks at (RFC 9113 section 6).
const (
	frameHeaders      = 0x1
	frameRSTStream    = 0x3
	frameContinuation = 0x9
	flagEndStream     = 0x1
	flagEndHeaders    = 0x4
)

func (g *guardConn) Read(p []byte) (int, error) {
	n, err := g.Conn.Read(p)
	for b := p[:n]; len(b) > 0; {
		h, ok, rest := g.rd.next(b)
		b = rest
		if !ok {
			break
		}
		switch h.typ {
		case frameHeaders:
			g.maxStream = max(g.maxStream, h.stream)
			g.blockBytes, g.blockFrames = h.length, 1
			if h.flags&flagEndHeaders == 0 {
				g.blockStart = time.Now()
				g.openBlock.Store(int64(g.blockBytes))
			}
		case frameContinuation:
			g.blockBytes += h.length
			g.blockFrames++
			if h.flags&flagEndHeaders != 0 {
				g.openBlock.Store(0)
			} else {
				g.openBlock.Store(int64(g.blockBytes))
			}
			if g.maxBlock > 0 && (g.blockBytes > g.maxBlock || g.blockFrames > relay.MaxHeaderBlockFrames ||
				time.Since(g.blockStart) > relay.MaxHeaderBlockTime) {
				g.calm("header block too large or too slow")
				return 0, errGuardClosed
			}
		case frameRSTStream:
			if g.endedByServer(h.stream) || g.take(time.Now()) {
				continue
			}
			g.calm("too many stream resets")
			return 0, errGuardClosed
		}
	}
	return n, err
}

func (g *guardConn) Write(p []byte) (int, error) {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	if g.dead {
		return 0, errGuardClosed
	}
	n, err := g.Conn.Write(p)
	for b := p[:n]; len(b) > 0; {
		h, ok, rest := g.wr.next(b)
		b = rest
		if !ok {
			break
		}
		if h.typ == frameRSTStream || (h.typ == frameHeaders && h.flags&flagEndStream != 0) {
			g.ended[g.endedNext].Store(h.stream)
			g.endedNext = (g.endedNext + 1) % len(g.ended)
		}
	}
	return n, err
}

// abusiveBlock is the size of an open header block past which a
// connection grpc-go closes under it counts as abuse: more than a
// maximum-size frame (SETTINGS_MAX_FRAME_SIZE's initial value), where a
// Milvus SDK call's headers are a few hundred bytes.
const abusiveBlock = 16 << 10

// Close closes the connection; grpc-go calls it. A close while the
// client's header block is open and large is grpc-go refusing a header
// list over its limit (it sends no GOAWAY): the address is penalised.
func (g *guardConn) Close() error {
	// Not under wmu: grpc-go's writer may be blocked in a write that
	// only this close ends.
	if g.openBlock.Load() > abusiveBlock && g.abused.CompareAndSwap(false, true) {
		g.penalty.Abused(g.Conn.RemoteAddr().String(), time.Now())
		if g.onClose != nil {
			g.onClose("abuse")
		}
	}
	return g.Conn.Close()
}

// endedByServer reports whether stream id is one of the last the server
// ended.
func (g *guardConn) endedByServer(id uint32) bool {
	for i := range g.ended {
		if g.ended[i].Load() == id {
			return true
		}
	}
	return false
}

// take spends one reset from the budget, refilled at rate per second up
// to burst.
func (g *guardConn) take(now time.Time) bool {
	if g.last.IsZero() {
		g.tokens = g.burst
	} else {
		g.tokens = min(g.burst, g.tokens+now.Sub(g.last).Seconds()*g.rate)
	}
	g.last = now
	if g.tokens < 1 {
		return false
	}
	g.tokens--
	return true
}

// calm ends the connection (and penalises its address's reconnections,
// relay.PeerPenalty): GOAWAY ENHANCE_YOUR_CALM when grpc-go's writer
// is between two frames and not in a write, then what the client still
// sends is read and dropped for guardLinger (closing a socket with unread
// bytes makes the kernel send a RST, and the client could lose the
// GOAWAY), then the connection is closed.
func (g *guardConn) calm(debug string) {
	g.abused.Store(true)
	g.penalty.Abused(g.Conn.RemoteAddr().String(), time.Now())
	if g.wmu.TryLock() {
		if !g.dead && g.wr.atBoundary() {
			_ = g.Conn.SetWriteDeadline(time.Now().Add(guardLinger))
			_, _ = g.Conn.Write(goAwayFrame(g.maxStream, http2.ErrCodeEnhanceYourCalm, debug))
		}
		g.dead = true
		g.wmu.Unlock()
		_ = g.Conn.SetReadDeadline(time.Now().Add(guardLinger))
		_, _ = io.Copy(io.Discard, g.Conn)
	}
	_ = g.Conn.Close()
	if g.onClose != nil {
		g.onClose("abuse")
	}
}

// guardLinger bounds how long a closed connection reads what its client
// still sends after the GOAWAY (as the relay does).
const guardLinger = time.Second

// goAwayFrame is a GOAWAY frame (RFC 9113 section 6.8).
func goAwayFrame(lastStream uint32, code http2.ErrCode, debug string) []byte {
	b := make([]byte, 9+8+len(debug))
	n := 8 + len(debug)
	b[0], b[1], b[2] = byte(n>>16), byte(n>>8), byte(n)
	b[3] = 0x7 // GOAWAY
	binary.BigEndian.PutUint32(b[9:], lastStream&(1<<31-1))
	binary.BigEndian.PutUint32(b[13:], uint32(code))
	copy(b[17:], debug)
	return b
}

// frameScanner follows the frame boundaries of one direction of an HTTP/2
// connection from its bytes as they pass: it collects each 9-byte frame
// header and skips the payload the header announces.
type frameScanner struct {
	hdr  [9]byte
	have int // bytes of hdr collected
	skip int // bytes before the next frame header
}

// frameHead is what the guard needs of a frame header.
type frameHead struct {
	typ, flags byte
	stream     uint32
	length     int
}

// next consumes b up to and including the next complete frame header and
// returns it (ok), and the bytes after it; !ok when b ended first.
func (s *frameScanner) next(b []byte) (h frameHead, ok bool, rest []byte) {
	if s.skip > 0 {
		k := min(s.skip, len(b))
		s.skip -= k
		b = b[k:]
	}
	if len(b) == 0 {
		return h, false, nil
	}
	k := copy(s.hdr[s.have:], b)
	s.have += k
	b = b[k:]
	if s.have < len(s.hdr) {
		return h, false, nil
	}
	s.have = 0
	s.skip = int(s.hdr[0])<<16 | int(s.hdr[1])<<8 | int(s.hdr[2])
	h = frameHead{typ: s.hdr[3], flags: s.hdr[4], stream: binary.BigEndian.Uint32(s.hdr[5:]) & (1<<31 - 1), length: s.skip}
	return h, true, b
}

// atBoundary reports whether the bytes so far end with a whole frame.
func (s *frameScanner) atBoundary() bool { return s.have == 0 && s.skip == 0 }
