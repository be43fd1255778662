package relay

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
)

// The relay engine speaks HTTP/2 itself on both sides (frames parsed and
// written with golang.org/x/net/http2's Framer and hpack), so that a
// request costs one read and one write per hop and no goroutine hand-offs
// beyond one to the worker that routes it. Shared pieces live here.

const (
	// Receive windows we grant peers: per stream and per connection.
	relayStreamWindow = 4 << 20
	relayConnWindow   = 16 << 20
	// Our SETTINGS_MAX_FRAME_SIZE: HTTP/2's default, the frame size
	// grpc-go writes whatever its peer allows.
	MaxFrameSize = 16 << 10
	// Credit is returned once this much of a window has been consumed.
	relayStreamUpdate = relayStreamWindow / 4
	relayConnUpdate   = relayConnWindow / 4
	// Initial peer values until their SETTINGS say otherwise.
	http2DefaultWindow   = 65535
	http2DefaultMaxFrame = 16384
)

var errConnClosed = errors.New("milvus-ha-proxy: connection closed")

// frameSink is where an h2writer's frames go: a bufio.Writer on the
// socket (backend connections), or a client connection's connOut.
type frameSink interface {
	io.Writer
	Buffered() int
	Flush() error
}

// h2writer serializes frame writes on one connection. Writers that find
// others queued behind them skip the flush: the last one out flushes for
// all, so concurrent responses leave in one write syscall.
type h2writer struct {
	mu      sync.Mutex
	waiting atomic.Int32
	bw      frameSink
	fr      *http2.Framer // writes only here; the reader goroutine reads
	henc    *hpack.Encoder
	hbuf    bytes.Buffer
	// hgen changes whenever the encoder's dynamic table may have
	// changed; hcache holds recent header blocks that encoded as table
	// references only, valid while hgen is what it was (blockCache).
	hgen   uint64
	hcache [4]cachedBlock
	hnext  int
	hdr    [9]byte
	pfx    [5]byte // writePrefix's
	// timeout, when sendTimeout is set (under the lock), is written as
	// grpc-timeout after the next header block (encodeVolatile), into
	// tbuf: the value is never a string, so a request costs no
	// allocation for it.
	timeout     time.Duration
	sendTimeout bool
	tbuf        [16]byte
	err         error // sticky: the first write error
	// maxFrame is the peer's SETTINGS_MAX_FRAME_SIZE.
	maxFrame uint32
	// answered is set when HEADERS or DATA are written: the keepalive
	// enforcement forgives pings once an answer went out (grpc-go's
	// server resets its ping strikes on both).
	answered atomic.Bool
	// acks flushes a PING acknowledgement that writePingAckLazy left in
	// the buffer when no other write took it along (nil: acknowledge at
	// once); ackArmed (under mu) is set while one is pending.
	acks     *ackFlusher
	ackArmed bool
	// owed is set (under mu) when a writer left its flush to the one
	// queued behind it (unlock): that one must flush, even to
	// acknowledge a PING.
	owed bool
}

// pingAckDelay bounds how long a PING's acknowledgement waits for other
// frames to the same peer (between it and twice it). grpc-go sends a BDP
// ping each time DATA arrives with none outstanding (its bdpEstimator),
// so under load a PING comes with nearly every read, from the clients and
// the clusters alike; acknowledged at once, each cost a write system
// call of its own (two in five of serve's writes at c=8 in make
// bench-proxy). Riding with the next answer or request costs nothing.
// The delay only lengthens the round trip the peer's estimator measures,
// which makes it grant larger windows, and is far below the keepalive
// timeouts clients set (grpc-go's default is 20 s). It is also the
// flusher's sweep interval: sweeping every millisecond cost more context
// switches than the writes it saved.
const pingAckDelay = 10 * time.Millisecond

// ackFlusher sends the PING acknowledgements that no other write took
// along for all the connections of a Server or a Pool. It is one
// goroutine, alive while some are pending, rather than a timer per
// connection: setting a timer to fire sooner than the runtime's poller
// sleeps wakes the poller, a system call and a context switch per PING
// (measured: more than the write it saves).
type ackFlusher struct {
	mu      sync.Mutex
	pending []*h2writer // written since the last sweep
	older   []*h2writer // written before it: flushed at the next
	running bool
}

// add has the flusher flush w's pending acknowledgement if nothing else
// does first (called under w.mu).
func (a *ackFlusher) add(w *h2writer) {
	a.mu.Lock()
	a.pending = append(a.pending, w)
	start := !a.running
	a.running = true
	a.mu.Unlock()
	if start {
		go a.run()
	}
}

// run sweeps every pingAckDelay until nothing is pending.
func (a *ackFlusher) run() {
	var spare []*h2writer // the array of the last sweep's, run's own
	for {
		time.Sleep(pingAckDelay)
		a.mu.Lock()
		due := a.older
		a.older, a.pending = a.pending, spare[:0]
		if len(due) == 0 && len(a.older) == 0 {
			a.running = false
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
		// Not under a.mu: add runs under a writer's lock.
		for i, w := range due {
			w.flushAck()
			due[i] = nil
		}
		spare = due
	}
}

func (w *h2writer) init(bw frameSink, fr *http2.Framer) {
	w.bw, w.fr = bw, fr
	w.henc = hpack.NewEncoder(&w.hbuf)
	w.maxFrame = http2DefaultMaxFrame
}

func (w *h2writer) lock() {
	w.waiting.Add(1)
	w.mu.Lock()
	w.waiting.Add(-1)
}

// unlock flushes unless another writer is queued, then releases.
func (w *h2writer) unlock() {
	if w.err == nil && w.bw.Buffered() > 0 {
		if w.waiting.Load() == 0 {
			w.err = w.bw.Flush()
			// A pending acknowledgement left with this write.
			w.ackArmed, w.owed = false, false
		} else {
			w.owed = true // the writer queued behind flushes
		}
	}
	w.mu.Unlock()
}

// unlockDefer releases without flushing and leaves the flush to fl, the
// list of the goroutine that will flush before it blocks (nil: flush now).
// Readers use it to send everything one read produced in one write.
func (w *h2writer) unlockDefer(fl *flushList) {
	if fl == nil {
		w.unlock()
		return
	}
	w.mu.Unlock()
	fl.add(w)
}

// flushList is the writers a goroutine has written to without flushing.
type flushList struct {
	ws []*h2writer
}

func (fl *flushList) add(w *h2writer) {
	for _, x := range fl.ws {
		if x == w {
			return
		}
	}
	fl.ws = append(fl.ws, w)
}

// flush flushes every writer on the list (or leaves it to a writer queued
// behind, which flushes on its way out).
func (fl *flushList) flush() {
	for i, w := range fl.ws {
		w.lock()
		w.unlock()
		fl.ws[i] = nil
	}
	fl.ws = fl.ws[:0]
}

// writeSettings starts a connection under the lock: our SETTINGS (extra,
// then the stream window we grant and the largest readable frame) and the
// connection window grown to relayConnWindow.
func (w *h2writer) writeSettings(streamWindow uint32, extra ...http2.Setting) {
	w.err = w.fr.WriteSettings(append(extra,
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: MaxFrameSize})...,
	)
	if w.err == nil {
		w.err = w.fr.WriteWindowUpdate(0, relayConnWindow-http2DefaultWindow)
	}
}

// writePingAckLazy answers a PING without flushing: the acknowledgement
// leaves with the next write to the peer, or from w.acks.
func (w *h2writer) writePingAckLazy(data [8]byte) {
	w.lock()
	if w.err == nil {
		w.err = w.fr.WritePing(true, data)
	}
	if w.acks == nil || w.owed {
		w.unlock()
		return
	}
	if w.err == nil && !w.ackArmed {
		w.ackArmed = true
		w.acks.add(w)
	}
	w.mu.Unlock() // no flush (a writer queued behind flushes it along)
}

// flushAck flushes the acknowledgement nothing else took along (for
// ackFlusher). After the connection closed it meets the sticky error or a
// closed socket, and does nothing.
func (w *h2writer) flushAck() {
	w.lock()
	w.ackArmed = false // also when the client's writer took it
	w.unlock()         // and whatever a writer before left to the one behind it
}

// writeRSTStream resets stream id with code and flushes.
func (w *h2writer) writeRSTStream(id uint32, code http2.ErrCode) {
	w.lock()
	if w.err == nil {
		w.err = w.fr.WriteRSTStream(id, code)
	}
	w.unlock()
}

// writeWindowUpdates returns conn bytes of connection window and stream
// bytes of stream id's window to the peer (nothing for a zero count),
// leaving the flush to fl as unlockDefer does.
func (w *h2writer) writeWindowUpdates(id uint32, conn, stream int, fl *flushList) {
	if conn <= 0 && stream <= 0 {
		return
	}
	w.lock()
	if conn > 0 && w.err == nil {
		w.err = w.fr.WriteWindowUpdate(0, uint32(conn))
	}
	if stream > 0 && w.err == nil {
		w.err = w.fr.WriteWindowUpdate(id, uint32(stream))
	}
	w.unlockDefer(fl)
}

// writeHeaders encodes fields and writes them as HEADERS (+CONTINUATION).
// Must hold the lock: HPACK state follows the order frames are written.
func (w *h2writer) writeHeaders(id uint32, end bool, fields ...[]hpack.HeaderField) {
	if w.err != nil {
		return
	}
	if !w.answered.Load() {
		w.answered.Store(true)
	}
	w.hbuf.Reset()
	w.encodeBlock(fields)
	block := w.hbuf.Bytes()
	max := int(w.maxFrame)
	first := true
	for first || len(block) > 0 {
		frag := block
		if len(frag) > max {
			frag = frag[:max]
		}
		block = block[len(frag):]
		if first {
			w.err = w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag, EndStream: end, EndHeaders: len(block) == 0})
			first = false
		} else {
			w.err = w.fr.WriteContinuation(id, len(block) == 0, frag)
		}
		if w.err != nil {
			return
		}
	}
}

// A relay sends the same header blocks over and over (a method's request
// headers to a cluster, a response's headers and trailers to a client),
// and once HPACK's dynamic table holds their fields each encodes to the
// same few bytes of table references; hashing every field to find it in
// the table was ~5% of serve's CPU per call. So a block that encoded as
// references only (top bit set: RFC 7541 section 6.1) is kept with its
// bytes, and an identical block reuses them for as long as the table has
// not changed (hgen). The one field that differs on every call,
// grpc-timeout, is left out of the comparison and written after the block
// as a literal without indexing (RFC 7541 section 6.2.2), so it never
// churns the table.
type cachedBlock struct {
	fields []hpack.HeaderField // the block's stable fields, in order
	gen    uint64
	enc    []byte
}

// volatileField reports a field written as a literal without indexing.
func volatileField(f hpack.HeaderField) bool { return f.Name == "grpc-timeout" }

// encodeBlock appends the HPACK encoding of groups (in order) to hbuf.
func (w *h2writer) encodeBlock(groups [][]hpack.HeaderField) {
	for i := range w.hcache {
		if e := &w.hcache[i]; e.enc != nil && e.gen == w.hgen && e.matches(groups) {
			w.hbuf.Write(e.enc)
			w.encodeVolatile(groups)
			return
		}
	}
	refsOnly := true
	n := 0
	for _, fs := range groups {
		for _, f := range fs {
			if volatileField(f) {
				continue
			}
			at := w.hbuf.Len()
			_ = w.henc.WriteField(f)
			if w.hbuf.Bytes()[at]&0x80 == 0 {
				refsOnly = false // a literal (the table may have grown) or a size update
			}
			n++
		}
	}
	if !refsOnly {
		w.hgen++
	} else if n > 0 {
		e := &w.hcache[w.hnext]
		w.hnext = (w.hnext + 1) % len(w.hcache)
		e.fields = e.fields[:0]
		for _, fs := range groups {
			for _, f := range fs {
				if !volatileField(f) {
					e.fields = append(e.fields, f)
				}
			}
		}
		e.gen, e.enc = w.hgen, append(e.enc[:0], w.hbuf.Bytes()...)
	}
	w.encodeVolatile(groups)
}

// matches reports whether groups' stable fields are e's.
func (e *cachedBlock) matches(groups [][]hpack.HeaderField) bool {
	i := 0
	for _, fs := range groups {
		for _, f := range fs {
			if volatileField(f) {
				continue
			}
			if i >= len(e.fields) || e.fields[i] != f {
				return false
			}
			i++
		}
	}
	return i == len(e.fields)
}

// encodeVolatile appends groups' volatile fields as literals without
// indexing, with literal names, not Huffman-coded.
func (w *h2writer) encodeVolatile(groups [][]hpack.HeaderField) {
	for _, fs := range groups {
		for _, f := range fs {
			if volatileField(f) {
				w.hbuf.WriteByte(0x00)
				hpackString(&w.hbuf, f.Name)
				hpackString(&w.hbuf, f.Value)
			}
		}
	}
	if w.sendTimeout {
		w.sendTimeout = false
		v := appendGRPCTimeout(w.tbuf[:0], w.timeout)
		w.hbuf.WriteByte(0x00)
		hpackString(&w.hbuf, "grpc-timeout")
		w.hbuf.WriteByte(byte(len(v))) // at most 9 bytes: a 7-bit prefix length
		w.hbuf.Write(v)
	}
}

// hpackString writes s as an HPACK string literal without Huffman coding
// (RFC 7541 section 5.2: a 7-bit prefix length).
func hpackString(b *bytes.Buffer, s string) {
	n := uint64(len(s))
	if n < 127 {
		b.WriteByte(byte(n))
	} else {
		b.WriteByte(127)
		n -= 127
		for n >= 128 {
			b.WriteByte(byte(n&0x7f | 0x80))
			n >>= 7
		}
		b.WriteByte(byte(n))
	}
	b.WriteString(s)
}

// writePrefix writes the 5-byte prefix of an uncompressed gRPC message of
// n bytes as DATA, from the writer's own array (a local one escapes to the
// heap through the frame sink: an allocation per message). The caller
// holds the lock and the credit.
func (w *h2writer) writePrefix(id uint32, end bool, n int) {
	w.pfx[0] = 0
	binary.BigEndian.PutUint32(w.pfx[1:], uint32(n))
	w.writeData(id, end, w.pfx[:])
}

// writeData writes p as DATA frames no larger than the peer allows. The
// caller holds the lock and the flow-control credit for len(p).
func (w *h2writer) writeData(id uint32, end bool, p []byte) {
	if !w.answered.Load() {
		w.answered.Store(true)
	}
	for w.err == nil {
		n := len(p)
		if n > int(w.maxFrame) {
			n = int(w.maxFrame)
		}
		last := end && n == len(p)
		// The frame header by hand, the payload straight into the
		// buffer: no intermediate copy as Framer.WriteData would make.
		binary.BigEndian.PutUint32(w.hdr[0:4], uint32(n)<<8)
		w.hdr[3] = byte(http2.FrameData)
		w.hdr[4] = 0
		if last {
			w.hdr[4] = byte(http2.FlagDataEndStream)
		}
		binary.BigEndian.PutUint32(w.hdr[5:9], id&(1<<31-1))
		if _, w.err = w.bw.Write(w.hdr[:]); w.err != nil {
			return
		}
		if _, w.err = w.bw.Write(p[:n]); w.err != nil {
			return
		}
		p = p[n:]
		if len(p) == 0 {
			return
		}
	}
}

// connOut is a client connection's output. Frames are appended to buf by
// whichever goroutine answers a call (under the h2writer's lock, which
// guards buf), and only the connection's own writer goroutine (run) writes
// them to the socket, each write under a deadline: a client that stops
// reading stalls nothing but its own connection, and is closed once a
// write makes no progress for writeTimeout. queued counts the bytes
// appended and not yet written; DATA waits (flow.take) while it is over
// budget, and a connection whose output passes hardCap anyway (frames
// that are not flow-controlled piling up) is closed.
type connOut struct {
	w            *h2writer
	nc           net.Conn
	buf, spare   []byte
	queued       atomic.Int64
	budget       int64
	hardCap      int64
	writeTimeout time.Duration
	flow         *flow // woken when queued drops under budget
	overflow     bool  // under w.mu: hardCap passed
	// raw is the socket for Flush's one non-blocking write (nil: not a
	// plain TCP connection, every write goes through run).
	raw syscall.RawConn
	// tryWriteFn is writeNow's callback for raw, made once (a closure per
	// call would be an allocation per call); tryWrote is what it wrote.
	tryWriteFn func(fd uintptr) bool
	tryWrote   int
	// busy is set (under w.mu) while run holds a batch it has not
	// finished writing: Flush must not write around it.
	busy       bool
	deadlineMu sync.Mutex
	stopping   bool // under deadlineMu: finish was called
	wake       chan struct{}
	stop       chan struct{} // closed by finish
	stopOnce   sync.Once
	done       chan struct{} // closed when run has returned
	// fail is called (once, from run) when a write fails or times out
	// or the output overflows; the socket is closed already.
	fail func(error)
	// resp, when set, is the response budget queued output counts
	// against: once output was written, its held streams may resume.
	resp *connBudget
}

// errOutputOverflow is a client connection's output passing its hard cap.
var errOutputOverflow = errors.New("milvus-ha-proxy: client connection's output over its budget: closing it")

// clientWriteChunk bounds one socket write, so that writeTimeout measures
// a lack of progress, not the size of a batch.
const clientWriteChunk = 256 << 10

func newConnOut(w *h2writer, nc net.Conn, f *flow, budget int64, writeTimeout time.Duration) *connOut {
	o := &connOut{w: w, nc: nc, flow: f, budget: budget, hardCap: 4*budget + 4<<20, writeTimeout: writeTimeout,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	// Only a plain TCP socket: a TLS connection (which grpc's credentials
	// wrap so that it still offers its socket's SyscallConn) must write
	// through its record layer.
	if tc, ok := nc.(*net.TCPConn); ok {
		if raw, err := tc.SyscallConn(); err == nil {
			o.raw = raw
			o.tryWriteFn = o.tryWrite
		}
	}
	return o
}

// Write appends p (under w.mu).
func (o *connOut) Write(p []byte) (int, error) {
	if o.overflow {
		return 0, errOutputOverflow
	}
	if o.queued.Add(int64(len(p))) > o.hardCap {
		o.overflow = true
		o.signal()
		return 0, errOutputOverflow
	}
	o.buf = append(o.buf, p...)
	return len(p), nil
}

// Buffered is what run has not taken yet (under w.mu).
func (o *connOut) Buffered() int { return len(o.buf) }

// Flush sends what is buffered; it never blocks. When the writer
// goroutine is idle, it first tries one non-blocking write of the whole
// buffer on the caller's goroutine: a response then leaves without waking
// the writer (a goroutine switch and a futex wake per call). What the
// socket does not take at once (the client reads slowly), or any error,
// is left to the writer goroutine, which waits for the socket under its
// write timeout; so the caller, often a cluster connection's reader
// serving many clients, is never held up by one client.
func (o *connOut) Flush() error {
	if o.raw != nil && !o.busy && !o.overflow && len(o.buf) > 0 {
		o.writeNow()
		if len(o.buf) == 0 {
			return nil
		}
	}
	o.signal()
	return nil
}

// writeNow writes as much of buf as the socket takes without waiting
// (under w.mu, with run idle).
func (o *connOut) writeNow() {
	o.tryWrote = 0
	err := o.raw.Write(o.tryWriteFn)
	n := o.tryWrote
	if err != nil || n == 0 {
		return // run writes it and meets the error, if any
	}
	rest := copy(o.buf, o.buf[n:])
	o.buf = o.buf[:rest]
	if o.queued.Add(-int64(n))+int64(n) >= o.budget {
		o.flow.wake() // take may be waiting for this
	}
	if o.resp != nil && o.resp.nheld.Load() > 0 {
		// Held streams may resume now; not here, under w.mu: the
		// writer goroutine does it.
		o.signal()
	}
}

// tryWrite is writeNow's one attempt (under w.mu): it never waits for
// the socket.
func (o *connOut) tryWrite(fd uintptr) bool {
	o.tryWrote = rawTryWrite(fd, o.buf)
	return true
}

func (o *connOut) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// over reports whether DATA must wait for the writer.
func (o *connOut) over(n int64) bool {
	q := o.queued.Load()
	return q > 0 && q+n > o.budget
}

// finish makes run write what is pending (for at most linger) and close
// the socket.
func (o *connOut) finish(linger time.Duration) {
	o.stopOnce.Do(func() {
		o.deadlineMu.Lock()
		o.stopping = true
		_ = o.nc.SetWriteDeadline(time.Now().Add(min(linger, o.writeTimeout)))
		o.deadlineMu.Unlock()
		close(o.stop)
	})
}

// run is the connection's writer goroutine.
func (o *connOut) run() {
	defer close(o.done)
	var deadlineSet time.Time
	stopping := false
	var err error
	for err == nil {
		if !stopping {
			select {
			case <-o.wake:
			case <-o.stop:
				stopping = true // what is pending goes out, within finish's linger
			}
		}
		o.w.mu.Lock()
		b := o.buf
		o.buf = o.spare[:0]
		overflow := o.overflow
		o.busy = len(b) > 0
		o.w.mu.Unlock()
		if overflow {
			err = errOutputOverflow
			break
		}
		for len(b) > 0 && err == nil {
			n := min(len(b), clientWriteChunk)
			// Re-arm the deadline only now and then (a fresh one per
			// write costs a timer update), and never after finish
			// set the linger's.
			if now := time.Now(); !stopping && now.Sub(deadlineSet) > o.writeTimeout/8 {
				o.deadlineMu.Lock()
				if !o.stopping {
					_ = o.nc.SetWriteDeadline(now.Add(o.writeTimeout))
				}
				o.deadlineMu.Unlock()
				deadlineSet = now
			}
			var k int
			k, err = o.nc.Write(b[:n])
			b = b[k:]
			if o.queued.Add(-int64(k))+int64(k) >= o.budget {
				o.flow.wake() // take may be waiting for this
			}
			if o.resp != nil && o.resp.nheld.Load() > 0 {
				o.resp.resume()
			}
		}
		if len(b) == 0 && o.resp != nil && o.resp.nheld.Load() > 0 {
			o.resp.resume() // woken by writeNow's drain
		}
		if cap(b) <= 1<<20 {
			o.spare = b[:0] // else let a large batch's buffer go
		} else {
			o.spare = nil
		}
		o.w.mu.Lock()
		o.busy = false
		o.w.mu.Unlock()
		if stopping {
			o.w.mu.Lock()
			empty := len(o.buf) == 0
			o.w.mu.Unlock()
			if empty {
				break
			}
		}
	}
	_ = o.nc.Close()
	if err != nil {
		o.w.mu.Lock()
		if o.w.err == nil {
			o.w.err = err
		}
		o.w.mu.Unlock()
		o.fail(err)
	}
}

// flow tracks the peer's flow-control windows for what we send on one
// connection: the connection window and each stream's.
type flow struct {
	mu      sync.Mutex
	cond    sync.Cond
	conn    int64
	initial int64 // the peer's SETTINGS_INITIAL_WINDOW_SIZE
	closed  bool
	// out, on a client connection, holds DATA back while the writer
	// goroutine is behind by more than its budget.
	out *connOut
}

// wake wakes the goroutines waiting in take.
func (f *flow) wake() {
	f.mu.Lock()
	f.cond.Broadcast()
	f.mu.Unlock()
}

func (f *flow) init() {
	f.cond.L = &f.mu
	f.conn = http2DefaultWindow
	f.initial = http2DefaultWindow
}

// streamFlow is one stream's send window, guarded by its connection's flow.
type streamFlow struct {
	win   int64
	reset bool // the stream is gone: stop waiting
}

// take reserves up to want bytes of credit, waiting while both windows
// allow nothing. It fails when the stream or connection ends, or ctx does.
func (f *flow) take(ctx context.Context, sf *streamFlow, want int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var stop func() bool
	for !f.closed && !sf.reset && (f.conn <= 0 || sf.win <= 0 || (f.out != nil && f.out.over(1))) {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if stop == nil {
			stop = context.AfterFunc(ctx, func() {
				f.mu.Lock()
				f.cond.Broadcast()
				f.mu.Unlock()
			})
			defer stop()
		}
		f.cond.Wait()
	}
	if f.closed {
		return 0, errConnClosed
	}
	if sf.reset {
		return 0, errStreamReset
	}
	n := int64(want)
	n = min(n, f.conn, sf.win)
	if f.out != nil {
		n = min(n, max(f.out.budget-f.out.queued.Load(), 16<<10))
	}
	f.conn -= n
	sf.win -= n
	return int(n), nil
}

var errStreamReset = errors.New("milvus-ha-proxy: stream reset")

// tryTake reserves exactly n bytes if both windows allow it now.
func (f *flow) tryTake(sf *streamFlow, n int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || sf.reset || f.conn < int64(n) || sf.win < int64(n) || (f.out != nil && f.out.over(int64(n))) {
		return false
	}
	f.conn -= int64(n)
	sf.win -= int64(n)
	return true
}

// maxWindow is the largest flow-control window (RFC 9113 section 6.9.1).
const maxWindow = 1<<31 - 1

// addConn adds the peer's WINDOW_UPDATE to the connection window; false:
// it would pass maxWindow, a connection error FLOW_CONTROL_ERROR.
// takeNow reserves what both windows allow now, up to want, without
// waiting.
func (f *flow) takeNow(sf *streamFlow, want int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || sf.reset {
		return 0
	}
	n := max(0, min(int64(want), f.conn, sf.win))
	f.conn -= n
	sf.win -= n
	return int(n)
}

func (f *flow) addConn(n int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conn+n > maxWindow {
		return false
	}
	f.conn += n
	f.cond.Broadcast()
	return true
}

// addStream adds to a stream's window; false: it would pass maxWindow, a
// stream error FLOW_CONTROL_ERROR.
func (f *flow) addStream(sf *streamFlow, n int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if sf.win+n > maxWindow {
		return false
	}
	sf.win += n
	f.cond.Broadcast()
	return true
}

func (f *flow) resetStream(sf *streamFlow) {
	f.mu.Lock()
	sf.reset = true
	f.cond.Broadcast()
	f.mu.Unlock()
}

func (f *flow) close() {
	f.mu.Lock()
	f.closed = true
	f.cond.Broadcast()
	f.mu.Unlock()
}

// sendFlower is a stream with a send window: *ustream and *Call.
type sendFlower interface{ sendFlow() *streamFlow }

// applySettings applies a peer's SETTINGS frame, whose values the caller
// has validated, and acks it. mu guards *streams (read under it: a closing
// connection replaces the map) and is taken before f.mu, as everywhere.
// maxConcurrent, when not nil, takes SETTINGS_MAX_CONCURRENT_STREAMS under
// mu; a nil one ignores the setting.
//
// It reports false when the new initial window takes a stream's window
// past maxWindow: a connection error FLOW_CONTROL_ERROR (RFC 9113 section
// 6.9.2), and nothing is acked.
func applySettings[S sendFlower](sf *http2.SettingsFrame, w *h2writer, f *flow, mu *sync.Mutex, streams *map[uint32]S, maxConcurrent *uint32) bool {
	overflow := false
	_ = sf.ForeachSetting(func(s http2.Setting) error {
		switch s.ID {
		case http2.SettingMaxFrameSize:
			w.lock()
			w.maxFrame = s.Val
			w.unlock()
		case http2.SettingMaxConcurrentStreams:
			if maxConcurrent != nil {
				mu.Lock()
				*maxConcurrent = s.Val
				mu.Unlock()
			}
		case http2.SettingInitialWindowSize:
			mu.Lock()
			f.mu.Lock()
			delta := int64(s.Val) - f.initial
			f.initial = int64(s.Val)
			for _, st := range *streams {
				sf := st.sendFlow()
				sf.win += delta
				if sf.win > maxWindow {
					overflow = true
				}
			}
			f.cond.Broadcast()
			f.mu.Unlock()
			mu.Unlock()
		case http2.SettingHeaderTableSize:
			w.lock()
			w.henc.SetMaxDynamicTableSizeLimit(s.Val)
			w.hgen++ // the table may shrink: cached references may be stale
			w.unlock()
		}
		return nil
	})
	if overflow {
		return false
	}
	w.lock()
	if w.err == nil {
		w.err = w.fr.WriteSettingsAck()
	}
	w.unlock()
	return true
}

// recvData finds the stream a DATA frame of n bytes is for (the zero S
// when it is gone) and counts n against the connection's receive window,
// all under mu, which guards *streams and *recvConn. It returns the
// connection credit to give back now: everything consumed once that
// reaches relayConnUpdate, else 0.
func recvData[S any](mu *sync.Mutex, streams *map[uint32]S, recvConn *int, id uint32, n int) (st S, sendConn int) {
	mu.Lock()
	st = (*streams)[id]
	*recvConn += n
	if *recvConn >= relayConnUpdate {
		sendConn, *recvConn = *recvConn, 0
	}
	mu.Unlock()
	return st, sendConn
}

// sendMessage writes one gRPC message (5-byte prefix, then parts) as DATA
// on stream id, taking flow-control credit as it goes. A message that fits
// the windows goes out under one lock hold.
func sendMessage(ctx context.Context, w *h2writer, f *flow, sf *streamFlow, id uint32, end bool, parts ...[]byte) error {
	var prefix [5]byte
	total := 0
	for _, p := range parts {
		total += len(p)
	}
	binary.BigEndian.PutUint32(prefix[1:], uint32(total))
	remaining := total + 5
	if f.tryTake(sf, remaining) {
		w.lock()
		remaining -= 5
		w.writeData(id, end && remaining == 0, prefix[:])
		for _, p := range parts {
			if len(p) > 0 {
				remaining -= len(p)
				w.writeData(id, end && remaining == 0, p)
			}
		}
		err := w.err
		w.unlock()
		return err
	}
	write := func(p []byte) error {
		for len(p) > 0 {
			n, err := f.take(ctx, sf, len(p))
			if err != nil {
				return err
			}
			remaining -= n
			w.lock()
			w.writeData(id, end && remaining == 0, p[:n])
			err = w.err
			w.unlock()
			if err != nil {
				return err
			}
			p = p[n:]
		}
		return nil
	}
	if err := write(prefix[:]); err != nil {
		return err
	}
	for _, p := range parts {
		if err := write(p); err != nil {
			return err
		}
	}
	return nil
}

// grpc-timeout: "<digits><unit>", at most 8 digits.
func parseGRPCTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	if n > int64(1<<63-1)/int64(unit) {
		return 1<<63 - 1, true
	}
	return time.Duration(n) * unit, true
}

// appendGRPCTimeout appends d as a grpc-timeout value (at most 8 digits
// and a unit) to dst.
func appendGRPCTimeout(dst []byte, d time.Duration) []byte {
	if d <= 0 {
		return append(dst, "1n"...)
	}
	// The coarsest unit that keeps 8 digits, rounding up.
	for _, u := range [...]struct {
		d time.Duration
		s byte
	}{{time.Nanosecond, 'n'}, {time.Microsecond, 'u'}, {time.Millisecond, 'm'}, {time.Second, 'S'}, {time.Minute, 'M'}, {time.Hour, 'H'}} {
		n := (d + u.d - 1) / u.d
		if n < 1e8 {
			return append(strconv.AppendInt(dst, int64(n), 10), u.s)
		}
	}
	return append(dst, "99999999H"...)
}

// grpc-message is percent-encoded (gRPC over HTTP/2 spec).
func encodeGRPCMessage(msg string) string {
	ok := true
	for i := 0; i < len(msg); i++ {
		if c := msg[i]; c < ' ' || c > '~' || c == '%' {
			ok = false
			break
		}
	}
	if ok {
		return msg
	}
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c >= ' ' && c <= '~' && c != '%' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte("0123456789ABCDEF"[c>>4])
		b.WriteByte("0123456789ABCDEF"[c&15])
	}
	return b.String()
}

func decodeGRPCMessage(msg string) string {
	if !strings.Contains(msg, "%") {
		return msg
	}
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		if msg[i] == '%' && i+2 < len(msg) {
			if v, err := strconv.ParseUint(msg[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(msg[i])
	}
	return b.String()
}

// httpStatusCode maps a non-200 HTTP status from a backend to a gRPC code
// (gRPC's http-grpc-status-mapping).
func httpStatusCode(s string) codes.Code {
	switch s {
	case "400":
		return codes.Internal
	case "401":
		return codes.Unauthenticated
	case "403":
		return codes.PermissionDenied
	case "404":
		return codes.Unimplemented
	case "429", "502", "503", "504":
		return codes.Unavailable
	}
	return codes.Unknown
}

// headerReader decodes header blocks (HEADERS + CONTINUATION) with the
// connection's HPACK decoder into one exactly sized slice per block: the
// x/net MetaHeadersFrame path grows a fresh slice field by field and
// re-validates every name, measurable on a proxy's hot path. The Framer
// still enforces the frame order of a header block.
//
// A block is bounded three ways (the CONTINUATION flood of
// CVE-2023-45288, which x/net guards in Framer.ReadMetaHeaders): its
// decoded size (maxList, advertised as SETTINGS_MAX_HEADER_LIST_SIZE; a
// block that ends in the frame that takes it over is refused as a stream,
// a CONTINUATION after that is errHeaderBlock), its encoded bytes and
// frames, and the time its CONTINUATION frames take (past those,
// errHeaderBlock: the connection is closed).
type headerReader struct {
	dec *hpack.Decoder
	buf []hpack.HeaderField // scratch, reused
	// slab is where complete blocks' fields are carved from: one
	// allocation per many blocks instead of one per block. A call keeps
	// its block's fields (a three-index slice, so it cannot grow into the
	// next block's) and with them the slab, at most fieldSlab fields.
	slab      []hpack.HeaderField
	size      int
	tooLarge  bool
	streamID  uint32
	endStream bool
	selfDep   bool // the HEADERS' priority names its own stream
	maxList   int
	// The open block's encoded bytes, CONTINUATION frames and start.
	bytes, frames int
	started       time.Time
	// shared (a cluster connection's reader, whose callers only read the
	// fields) turns on the cache of decoded blocks: a single-frame block
	// of table references only (RFC 7541 section 6.1) leaves the dynamic
	// table as it was, so the same bytes decode to the same fields until
	// a block that changes the table (dgen). A cluster answers every call
	// with the same two such blocks (headers, trailers).
	shared bool
	dgen   uint64
	dcache [4]decodedBlock
	dnext  int
}

type decodedBlock struct {
	block  []byte
	gen    uint64
	fields []hpack.HeaderField // shared, read-only
}

// refsOnly reports whether an HPACK block is indexed fields only.
func refsOnly(b []byte) bool {
	for i := 0; i < len(b); i++ {
		if b[i]&0x80 == 0 {
			return false
		}
		if b[i]&0x7f == 0x7f { // the index goes on in 7-bit groups
			for i++; i < len(b) && b[i]&0x80 != 0; i++ {
			}
		}
	}
	return len(b) > 0
}

// defaultMaxHeaderList is SETTINGS_MAX_HEADER_LIST_SIZE unless configured.
// A Milvus SDK call carries a few hundred bytes of headers (a token or a
// user:password pair included); 64 KiB is Envoy's default request header
// limit (max_request_headers_kb: 60). Every connection a CONTINUATION
// flood opens costs the proxy up to this much decoding before it is
// closed, so a larger default buys nothing and costs the other clients.
const defaultMaxHeaderList = 64 << 10

// Bounds of one header block beyond its decoded size (the grpc engine's
// guard applies the same ones).
const (
	MaxHeaderBlockFrames  = 512
	MaxHeaderBlockTime    = 10 * time.Second
	HeaderBlockByteMargin = 64 << 10
)

// errHeaderBlock is a header block past its bounds: a connection error.
var errHeaderBlock = errors.New("milvus-ha-proxy: header block over its size, frame or time bounds")

func newHeaderReader(maxList int) *headerReader {
	if maxList <= 0 {
		maxList = defaultMaxHeaderList
	}
	h := &headerReader{buf: make([]hpack.HeaderField, 0, 32), maxList: maxList}
	h.dec = hpack.NewDecoder(4096, h.emit)
	h.dec.SetMaxStringLength(maxList)
	return h
}

func (h *headerReader) emit(f hpack.HeaderField) {
	if h.tooLarge {
		return
	}
	h.size += len(f.Name) + len(f.Value) + 32
	if h.size > h.maxList {
		h.tooLarge = true
		return
	}
	h.buf = append(h.buf, f)
}

// read takes a HEADERS or CONTINUATION frame. It returns the block's
// fields once the block is complete (nil fields for a block over maxList,
// which the caller refuses), or a connection error: errHeaderBlock, or
// COMPRESSION_ERROR.
func (h *headerReader) read(f http2.Frame) (fields []hpack.HeaderField, complete bool, err error) {
	var frag []byte
	var end bool
	switch f := f.(type) {
	case *http2.HeadersFrame:
		h.buf, h.size, h.tooLarge = h.buf[:0], 0, false
		h.streamID, h.endStream = f.StreamID, f.StreamEnded()
		h.selfDep = f.HasPriority() && f.Priority.StreamDep == f.StreamID
		frag, end = f.HeaderBlockFragment(), f.HeadersEnded()
		h.bytes, h.frames = len(frag), 0
		if !end {
			h.started = time.Now()
		} else if h.shared && refsOnly(frag) {
			for i := range h.dcache {
				if e := &h.dcache[i]; e.gen == h.dgen && e.block != nil && bytes.Equal(e.block, frag) {
					return e.fields, true, nil
				}
			}
		}
	case *http2.ContinuationFrame:
		frag, end = f.HeaderBlockFragment(), f.HeadersEnded()
		h.bytes += len(frag)
		h.frames++
		// Once the decoded block is over maxList, its stream is refused
		// anyway: a CONTINUATION after that is read no further (as
		// x/net's Framer.ReadMetaHeaders does since CVE-2023-45288).
		if h.tooLarge || h.bytes > h.maxList+HeaderBlockByteMargin || h.frames > MaxHeaderBlockFrames || time.Since(h.started) > MaxHeaderBlockTime {
			return nil, false, errHeaderBlock
		}
	}
	if _, err := h.dec.Write(frag); err != nil {
		if errors.Is(err, hpack.ErrStringLength) {
			// A single string over maxList: the decoder's state
			// is lost with it, so the connection is.
			return nil, false, errHeaderBlock
		}
		return nil, false, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if !end {
		return nil, false, nil
	}
	if err := h.dec.Close(); err != nil {
		return nil, false, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if h.tooLarge {
		h.dgen++              // the table may have changed
		return nil, true, nil // the caller refuses the stream
	}
	n := len(h.buf)
	if n > len(h.slab) {
		h.slab = make([]hpack.HeaderField, max(fieldSlab, n))
	}
	fields, h.slab = h.slab[:n:n], h.slab[n:]
	copy(fields, h.buf)
	if h.shared {
		if hf, ok := f.(*http2.HeadersFrame); ok && hf.HeadersEnded() && refsOnly(frag) {
			e := &h.dcache[h.dnext]
			h.dnext = (h.dnext + 1) % len(h.dcache)
			e.block, e.gen, e.fields = append(e.block[:0], frag...), h.dgen, fields
		} else {
			h.dgen++ // the table may have changed
		}
	}
	return fields, true, nil
}

// fieldSlab is how many header fields headerReader allocates at once:
// ~10 KiB, some 25 calls' request or response headers.
const fieldSlab = 256

// inflight counts calls being handled. Unlike a sync.WaitGroup it may be
// waited on while calls still start (streams the client sent before it saw
// a GOAWAY), and a wait can be given up when its context ends.
type inflight struct {
	n    atomic.Int64
	mu   sync.Mutex
	idle chan struct{} // closed when n drops to zero; nil when no one waits
}

func (a *inflight) Add(k int) { a.n.Add(int64(k)) }

func (a *inflight) Done() {
	n := a.n.Add(-1)
	if n > 0 {
		return
	}
	if n < 0 {
		panic("proxy: inflight counter below zero")
	}
	a.mu.Lock()
	if a.idle != nil {
		close(a.idle)
		a.idle = nil
	}
	a.mu.Unlock()
}

// wait returns once no call is in flight, or with ctx's error.
func (a *inflight) wait(ctx context.Context) error {
	for {
		a.mu.Lock()
		if a.n.Load() == 0 {
			a.mu.Unlock()
			return nil
		}
		if a.idle == nil {
			a.idle = make(chan struct{})
		}
		ch := a.idle
		a.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Request validation at the edge (RFC 9113 section 8, and gRPC over
// HTTP/2's rules as grpc-go's server applies them): a request that fails
// is refused here, never forwarded to a cluster.

// headerVerdict is what checkRequest found.
type headerVerdict int

const (
	headersOK headerVerdict = iota
	// headersMalformed: RFC 9113 section 8.1.1, a stream error
	// PROTOCOL_ERROR.
	headersMalformed
	// headersBadMethod: not POST; HTTP 405, as grpc-go answers.
	headersBadMethod
	// headersBadContentType: not application/grpc[+...|;...]; HTTP
	// 415, as grpc-go answers.
	headersBadContentType
)

// checkRequest validates a request's header block: lower-case field
// names and valid values, only the four request pseudo-headers, each
// once and before any regular field, no connection-specific fields, te
// only "trailers", then method POST and a gRPC content type. It returns
// why the request is refused and a message for the client.
func checkRequest(fields []hpack.HeaderField) (headerVerdict, string) {
	var method, scheme, path, contentType string
	var seen [4]bool
	regular := false
	for _, f := range fields {
		if !validFieldName(f.Name) {
			return headersMalformed, "invalid header field name " + strconv.Quote(f.Name)
		}
		if !httpguts.ValidHeaderFieldValue(f.Value) {
			return headersMalformed, "invalid value of header field " + f.Name
		}
		if f.Name[0] == ':' {
			if regular {
				return headersMalformed, "pseudo-header " + f.Name + " after a regular header field"
			}
			i := -1
			switch f.Name {
			case ":method":
				i, method = 0, f.Value
			case ":scheme":
				i, scheme = 1, f.Value
			case ":path":
				i, path = 2, f.Value
			case ":authority":
				i = 3
			default:
				return headersMalformed, "pseudo-header " + f.Name + " is not a request's"
			}
			if seen[i] {
				return headersMalformed, "pseudo-header " + f.Name + " repeated"
			}
			seen[i] = true
			continue
		}
		regular = true
		switch f.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			return headersMalformed, "connection-specific header field " + f.Name
		case "te":
			if f.Value != "trailers" {
				return headersMalformed, "te: " + f.Value + " (only \"trailers\" is allowed)"
			}
		case "content-type":
			contentType = f.Value
		}
	}
	if method == "" || scheme == "" || path == "" {
		return headersMalformed, "missing :method, :scheme or :path"
	}
	if !isGRPCContentType(contentType) {
		return headersBadContentType, "invalid gRPC request content-type " + strconv.Quote(contentType)
	}
	if method != "POST" {
		return headersBadMethod, "invalid gRPC request method " + strconv.Quote(method)
	}
	return headersOK, ""
}

// checkTrailers validates a request's trailers: no pseudo-headers, valid
// lower-case names.
func checkTrailers(fields []hpack.HeaderField) bool {
	for _, f := range fields {
		if !validFieldName(f.Name) || f.Name[0] == ':' || !httpguts.ValidHeaderFieldValue(f.Value) {
			return false
		}
	}
	return true
}

// validFieldName: a token (RFC 9110), lower case, or a pseudo-header name.
func validFieldName(name string) bool {
	if name == "" {
		return false
	}
	rest := name
	if name[0] == ':' {
		rest = name[1:]
		if rest == "" {
			return false
		}
	}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if 'A' <= c && c <= 'Z' || !httpguts.IsTokenRune(rune(c)) {
			return false
		}
	}
	return true
}

// isGRPCContentType: application/grpc, or it followed by "+" or ";"
// (gRPC over HTTP/2; grpc-go's grpcutil.ContentSubtype).
func isGRPCContentType(ct string) bool {
	const base = "application/grpc"
	if len(ct) < len(base) || !strings.EqualFold(ct[:len(base)], base) {
		return false
	}
	return len(ct) == len(base) || ct[len(base)] == '+' || ct[len(base)] == ';'
}

// rateBudget is a token bucket: burst events at once, rate per second
// after that. Used for what a connection may do a little of but never
// flood with (resets of unfinished streams, SETTINGS, empty frames), as
// Go's net/http2 and grpc-go bound them.
type rateBudget struct {
	tokens float64
	last   time.Time
}

// take spends one token, refilling at rate per second up to burst; it
// reports false once the budget is spent.
func (b *rateBudget) take(now time.Time, rate, burst float64) bool {
	if b.last.IsZero() {
		b.tokens = burst
	} else {
		b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
