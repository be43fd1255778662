package abuse

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"
)

// h2conn is an HTTP/2 client connection driven frame by frame, for the
// probes that must send what no library sends. A goroutine reads the
// peer's frames (unless the connection is opened with noRead), answers
// SETTINGS and PING as a client must, returns flow-control credit when
// asked to, and records how the peer treated the connection and its
// streams.
type h2conn struct {
	c      net.Conn
	opts   h2options
	wmu    sync.Mutex // guards fr, bw, nextID
	bw     *bufio.Writer
	fr     *http2.Framer
	nextID uint32

	sent atomic.Int64 // bytes written

	mu         sync.Mutex
	cond       *sync.Cond // signalled on credit, stream ends and close
	sendWin    int64      // connection send window
	streamWin  map[uint32]int64
	initWin    int64 // peer's SETTINGS_INITIAL_WINDOW_SIZE
	maxFrame   uint32
	goAway     *http2.GoAwayFrame
	goAwayData string
	goAwaySent int64 // bytes we had written when the first GOAWAY came
	resets     map[http2.ErrCode]int
	statuses   map[string]int // grpc-status (or ":status N") of ended streams
	ended      map[uint32]bool
	dataRecv   int64
	readErr    error
	endedAt    time.Time     // when the peer sent GOAWAY or the reader stopped
	done       chan struct{} // closed when the reader stops
}

type h2options struct {
	initialWindow uint32 // our SETTINGS_INITIAL_WINDOW_SIZE; 0 sends 0
	setWindow     bool   // send SETTINGS_INITIAL_WINDOW_SIZE at all
	connWindow    uint32 // extra connection window granted at start
	autoWindow    bool   // return credit for every DATA frame received
	noRead        bool   // never read the socket
	readBuffer    int    // SO_RCVBUF; 0: the system's
	noPingAck     bool   // leave PINGs unanswered
	noTrack       bool   // count ended streams without remembering their ids
	writeBuffer   int    // bytes buffered before a write; 0: 4 KiB
}

// dialH2 opens a connection to addr and sends the client preface and
// SETTINGS.
func dialH2(ctx context.Context, addr string, o h2options) (*h2conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if o.readBuffer > 0 {
		_ = c.(*net.TCPConn).SetReadBuffer(o.readBuffer)
	}
	h := &h2conn{
		c: c, opts: o, nextID: 1,
		sendWin: 65535, initWin: 65535, maxFrame: 16384,
		streamWin: map[uint32]int64{},
		resets:    map[http2.ErrCode]int{},
		statuses:  map[string]int{},
		ended:     map[uint32]bool{},
		done:      make(chan struct{}),
	}
	h.cond = sync.NewCond(&h.mu)
	h.bw = bufio.NewWriterSize(countingWriter{c, &h.sent}, max(o.writeBuffer, 4<<10))
	h.fr = http2.NewFramer(h.bw, c)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.fr.MaxHeaderListSize = 64 << 20
	if _, err := h.bw.WriteString(http2.ClientPreface); err != nil {
		c.Close()
		return nil, err
	}
	var settings []http2.Setting
	if o.setWindow {
		settings = append(settings, http2.Setting{ID: http2.SettingInitialWindowSize, Val: o.initialWindow})
	}
	err = h.fr.WriteSettings(settings...)
	if err == nil && o.connWindow > 0 {
		err = h.fr.WriteWindowUpdate(0, o.connWindow)
	}
	if err == nil {
		err = h.bw.Flush()
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	if o.noRead {
		close(h.done)
	} else {
		go h.readLoop()
	}
	// The abuser leaves when ctx ends, even when blocked in a write.
	context.AfterFunc(ctx, func() { c.Close() })
	return h, nil
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

func (h *h2conn) close() {
	h.c.Close()
	<-h.done
}

// sentBeforeEnd is how many bytes we had written when the peer sent
// GOAWAY, or all we wrote when it sent none.
func (h *h2conn) sentBeforeEnd() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.goAway != nil {
		return h.goAwaySent
	}
	return h.sent.Load()
}

// goneAway reports whether the peer sent GOAWAY.
func (h *h2conn) goneAway() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.goAway != nil
}

// closed reports whether the reader saw the peer end the connection
// (EOF, reset, or an error other than our own close).
func (h *h2conn) closed() bool {
	select {
	case <-h.done:
		h.mu.Lock()
		defer h.mu.Unlock()
		return !h.opts.noRead && !errors.Is(h.readErr, net.ErrClosed)
	default:
		return false
	}
}

func (h *h2conn) readLoop() {
	defer close(h.done)
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			h.mu.Lock()
			h.readErr = err
			if h.endedAt.IsZero() {
				h.endedAt = time.Now()
			}
			h.cond.Broadcast()
			h.mu.Unlock()
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			h.mu.Lock()
			_ = f.ForeachSetting(func(s http2.Setting) error {
				switch s.ID {
				case http2.SettingInitialWindowSize:
					d := int64(s.Val) - h.initWin
					h.initWin = int64(s.Val)
					for id := range h.streamWin {
						h.streamWin[id] += d
					}
				case http2.SettingMaxFrameSize:
					h.maxFrame = s.Val
				}
				return nil
			})
			h.cond.Broadcast()
			h.mu.Unlock()
			h.write(func() error { return h.fr.WriteSettingsAck() })
		case *http2.PingFrame:
			if !f.IsAck() && !h.opts.noPingAck {
				h.write(func() error { return h.fr.WritePing(true, f.Data) })
			}
		case *http2.WindowUpdateFrame:
			h.mu.Lock()
			if f.StreamID == 0 {
				h.sendWin += int64(f.Increment)
			} else if _, ok := h.streamWin[f.StreamID]; ok {
				h.streamWin[f.StreamID] += int64(f.Increment)
			}
			h.cond.Broadcast()
			h.mu.Unlock()
		case *http2.GoAwayFrame:
			h.mu.Lock()
			if h.goAway == nil {
				h.goAwaySent = h.sent.Load()
				h.endedAt = time.Now()
			}
			g := *f // the frame's buffer is the framer's
			h.goAway = &g
			h.goAwayData = string(f.DebugData())
			h.cond.Broadcast()
			h.mu.Unlock()
		case *http2.RSTStreamFrame:
			h.endStream(f.StreamID, func() { h.resets[f.ErrCode]++ })
		case *http2.MetaHeadersFrame:
			if f.StreamEnded() {
				st := f.PseudoValue("status")
				if gs := fieldValue(f, "grpc-status"); gs != "" {
					st = "grpc-status " + gs
				} else {
					st = ":status " + st
				}
				h.endStream(f.StreamID, func() { h.statuses[st]++ })
			}
		case *http2.DataFrame:
			h.mu.Lock()
			h.dataRecv += int64(f.Length)
			h.mu.Unlock()
			if h.opts.autoWindow && f.Length > 0 {
				h.write(func() error {
					if err := h.fr.WriteWindowUpdate(0, f.Length); err != nil {
						return err
					}
					if f.StreamEnded() {
						return nil
					}
					return h.fr.WriteWindowUpdate(f.StreamID, f.Length)
				})
			}
			if f.StreamEnded() {
				h.endStream(f.StreamID, func() { h.statuses["data END_STREAM"]++ })
			}
		}
	}
}

// fieldValue returns the value of the regular header field name in f.
func fieldValue(f *http2.MetaHeadersFrame, name string) string {
	for _, hf := range f.RegularFields() {
		if hf.Name == name {
			return hf.Value
		}
	}
	return ""
}

// endStream records the end of stream id once.
func (h *h2conn) endStream(id uint32, rec func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ended[id] {
		return
	}
	if !h.opts.noTrack {
		h.ended[id] = true
	}
	delete(h.streamWin, id)
	rec()
	h.cond.Broadcast()
}

// write runs fn under the write lock and flushes; errors end up as a
// closed connection, which the probes observe.
func (h *h2conn) write(fn func() error) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if err := fn(); err != nil {
		return err
	}
	return h.bw.Flush()
}

// rawStreams sends n streams of HEADERS(block) + DATA(msg, END_STREAM),
// each followed at once by RST_STREAM(CANCEL) when reset is set, in one
// write: the frames of Rapid Reset (CVE-2023-44487), without flow-control
// bookkeeping (msg must fit the initial window).
func (h *h2conn) rawStreams(n int, block, msg []byte, reset bool) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	for range n {
		id := h.nextID
		h.nextID += 2
		err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndHeaders: true})
		if err == nil {
			err = h.fr.WriteData(id, true, msg)
		}
		if err == nil && reset {
			err = h.fr.WriteRSTStream(id, http2.ErrCodeCancel)
		}
		if err != nil {
			return err
		}
	}
	return h.bw.Flush()
}

// newStream reserves the next client stream id.
func (h *h2conn) newStream() uint32 {
	h.wmu.Lock()
	id := h.nextID
	h.nextID += 2
	h.wmu.Unlock()
	h.mu.Lock()
	h.streamWin[id] = h.initWin
	h.mu.Unlock()
	return id
}

// grpcHeaders are the request headers of a gRPC call of method (a
// MilvusService method name), in the order grpc-go sends them.
func grpcHeaders(method string, extra ...hpack.HeaderField) []hpack.HeaderField {
	return append([]hpack.HeaderField{
		{Name: ":method", Value: "POST"},
		{Name: ":scheme", Value: "http"},
		{Name: ":path", Value: "/milvus.proto.milvus.MilvusService/" + method},
		{Name: ":authority", Value: "abuse"},
		{Name: "content-type", Value: "application/grpc"},
		{Name: "te", Value: "trailers"},
	}, extra...)
}

// writeBlock sends an already encoded header block (which must not use
// the dynamic table unless the caller means it to).
func (h *h2conn) writeBlock(id uint32, block []byte, endStream bool) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	return h.writeBlockLocked(id, block, endStream)
}

func (h *h2conn) writeBlockLocked(id uint32, block []byte, endStream bool) error {
	h.mu.Lock()
	max := int(h.maxFrame)
	h.mu.Unlock()
	first := block[:min(len(block), max)]
	rest := block[len(first):]
	err := h.fr.WriteHeaders(http2.HeadersFrameParam{
		StreamID: id, BlockFragment: first, EndStream: endStream, EndHeaders: len(rest) == 0,
	})
	for err == nil && len(rest) > 0 {
		n := min(len(rest), max)
		err = h.fr.WriteContinuation(id, n == len(rest), rest[:n])
		rest = rest[n:]
	}
	if err != nil {
		return err
	}
	return h.bw.Flush()
}

// writeData sends data on stream id in frames of at most the peer's frame
// size, waiting for flow-control credit when respectWindow is set (else
// ignoring it, as an attacker would), until ctx ends.
func (h *h2conn) writeData(ctx context.Context, id uint32, data []byte, endStream, respectWindow bool) error {
	for first := true; first || len(data) > 0; first = false {
		h.mu.Lock()
		n := min(len(data), int(h.maxFrame))
		if respectWindow {
			for n > 0 && (h.sendWin <= 0 || h.streamWin[id] <= 0) && h.readErr == nil && ctx.Err() == nil && !h.ended[id] {
				waitCond(ctx, h.cond)
			}
			if h.readErr != nil {
				err := h.readErr
				h.mu.Unlock()
				return err
			}
			if err := ctx.Err(); err != nil {
				h.mu.Unlock()
				return err
			}
			if h.ended[id] {
				h.mu.Unlock()
				return errStreamEnded
			}
			n = int(min(int64(n), h.sendWin, h.streamWin[id]))
		}
		h.sendWin -= int64(n)
		h.streamWin[id] -= int64(n)
		h.mu.Unlock()
		chunk := data[:n]
		data = data[n:]
		if err := h.write(func() error { return h.fr.WriteData(id, endStream && len(data) == 0, chunk) }); err != nil {
			return err
		}
	}
	return nil
}

var errStreamEnded = errors.New("the peer ended the stream")

// waitCond waits on c (whose lock the caller holds) until it is signalled
// or ctx ends.
func waitCond(ctx context.Context, c *sync.Cond) {
	stop := context.AfterFunc(ctx, func() {
		c.L.Lock()
		c.Broadcast()
		c.L.Unlock()
	})
	c.Wait()
	stop()
}

// waitEnded waits until stream id has ended or the connection is gone,
// and reports whether the stream ended.
func (h *h2conn) waitEnded(ctx context.Context, id uint32) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for !h.ended[id] && h.readErr == nil && ctx.Err() == nil {
		waitCond(ctx, h.cond)
	}
	return h.ended[id]
}

// summary describes how the peer treated the connection: GOAWAY, resets,
// stream outcomes, whether it closed.
func (h *h2conn) summary() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var parts []string
	if h.goAway != nil {
		s := "GOAWAY " + h.goAway.ErrCode.String()
		if h.goAwayData != "" {
			s += fmt.Sprintf(" %q", truncate(h.goAwayData, 60))
		}
		parts = append(parts, s)
	}
	for _, code := range slices.Sorted(maps.Keys(h.resets)) {
		parts = append(parts, fmt.Sprintf("%d×RST %s", h.resets[code], code))
	}
	for _, st := range slices.Sorted(maps.Keys(h.statuses)) {
		parts = append(parts, fmt.Sprintf("%d×%s", h.statuses[st], st))
	}
	if h.readErr != nil && !h.opts.noRead {
		switch {
		case errors.Is(h.readErr, io.EOF):
			parts = append(parts, "closed")
		case errors.Is(h.readErr, syscall.ECONNRESET):
			parts = append(parts, "reset")
		case errors.Is(h.readErr, net.ErrClosed):
			// we closed it
		default:
			parts = append(parts, "read error: "+truncate(h.readErr.Error(), 60))
		}
	}
	return strings.Join(parts, ", ")
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// grpcFrame is msg marshalled with gRPC's 5-byte length prefix.
func grpcFrame(msg proto.Message) []byte {
	b, err := proto.Marshal(msg)
	if err != nil {
		panic(err)
	}
	return grpcPrefix(b)
}

func grpcPrefix(b []byte) []byte {
	out := make([]byte, 5+len(b))
	binary.BigEndian.PutUint32(out[1:5], uint32(len(b)))
	copy(out[5:], b)
	return out
}

// mib formats bytes in MiB.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// sleepCtx sleeps d or until ctx ends, and reports whether ctx is still
// live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// HPACK encodings built by hand (RFC 7541 section 6), stateless unless
// they say otherwise, so that a block can be sent many times and carry
// what an encoder would refuse to write.

// hpackInt appends v as an HPACK integer with an n-bit prefix whose other
// bits are first.
func hpackInt(dst []byte, n uint, first byte, v uint64) []byte {
	limit := uint64(1)<<n - 1
	if v < limit {
		return append(dst, first|byte(v))
	}
	dst = append(dst, first|byte(limit))
	v -= limit
	for v >= 128 {
		dst = append(dst, byte(v%128)|0x80)
		v /= 128
	}
	return append(dst, byte(v))
}

func hpackString(dst []byte, s string) []byte {
	return append(hpackInt(dst, 7, 0, uint64(len(s))), s...)
}

// literal is a header field "without indexing", with a literal name.
func literal(name, value string) []byte {
	return hpackString(hpackString([]byte{0x00}, name), value)
}

// literalIndexed is a header field "with incremental indexing": it adds
// the field to the decoder's dynamic table.
func literalIndexed(name, value string) []byte {
	return hpackString(hpackString([]byte{0x40}, name), value)
}

// staticBlock encodes fields as literals: a block any decoder state
// accepts, as many times as it is sent.
func staticBlock(fields []hpack.HeaderField) []byte {
	var b []byte
	for _, f := range fields {
		b = append(b, literal(f.Name, f.Value)...)
	}
	return b
}
