package relay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/proxy/rawmsg"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	gstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Limits bound what one client connection of the relay engine may
// hold or do. Zero fields take DefaultLimits' values.
type Limits struct {
	// MaxConcurrentStreams is the SETTINGS_MAX_CONCURRENT_STREAMS granted
	// to each client connection; a stream past it is refused
	// (REFUSED_STREAM).
	MaxConcurrentStreams uint32
	// MaxHeaderListSize is the SETTINGS_MAX_HEADER_LIST_SIZE announced
	// to clients (decoded size, RFC 9113 section 6.5.2): a request over
	// it is refused; a header block far over it, or whose CONTINUATION
	// frames keep coming, closes the connection.
	MaxHeaderListSize int
	// HandshakeTimeout bounds the TLS handshake and the client's
	// connection preface.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a client connection gracefully (GOAWAY) after
	// this long without a call (PINGs do not count), as grpc-go's
	// MaxConnectionIdle does; clients reconnect when they next call.
	IdleTimeout time.Duration
	// WriteTimeout closes a client connection when a write to it makes
	// no progress for this long (a client that stopped reading).
	WriteTimeout time.Duration
	// ConnOutputBuffer is how far a client connection's writer may fall
	// behind before answers to it wait (it is closed at 4x + 4 MiB).
	ConnOutputBuffer int
	// ConnResponseBuffer bounds the bytes of backend answers one client
	// connection may have the proxy hold (received and not yet written
	// to its socket, its queued output included), and ResponseBuffer the
	// same for all connections together. Past either, the relay stops
	// returning flow-control window to the clusters for that
	// connection's calls (back-pressure) until the client reads; other
	// clients' calls on the same backend connections keep flowing. Each
	// call may run ahead of them by BackendStreamWindow, the initial
	// stream window granted to clusters (PoolOptions.StreamWindow), and
	// one answer larger than the budget is still received whole.
	ConnResponseBuffer  int
	ResponseBuffer      int64
	BackendStreamWindow int
	// PingMinTime and PingWithoutCalls are the keepalive enforcement
	// policy (grpc-go's keepalive.EnforcementPolicy): a client that
	// pings more often than PingMinTime (or, unless PingWithoutCalls,
	// without a call open) three times is closed with GOAWAY
	// ENHANCE_YOUR_CALM "too_many_pings". Sending an answer forgives.
	PingMinTime      time.Duration
	PingWithoutCalls *bool
	// ResetsPerSecond bounds a client's resets of streams it had not
	// seen answered (the "rapid reset" of CVE-2023-44487), and
	// ControlFramesPerSecond its SETTINGS frames and empty DATA and
	// CONTINUATION frames; each may burst to 10x. Past either, the
	// connection is closed with GOAWAY ENHANCE_YOUR_CALM.
	ResetsPerSecond        int
	ControlFramesPerSecond int
	// AbuseReconnectInterval: after a connection was closed with
	// ENHANCE_YOUR_CALM, new connections from the same IP address are
	// served one per this interval for a while (PeerPenalty); negative
	// turns it off.
	AbuseReconnectInterval time.Duration
}

// DefaultLimits are the relay's limits when Options.Limits
// leaves a field zero.
var DefaultLimits = Limits{
	MaxConcurrentStreams:   1024,
	MaxHeaderListSize:      defaultMaxHeaderList,
	HandshakeTimeout:       10 * time.Second,
	IdleTimeout:            2 * time.Minute,
	WriteTimeout:           30 * time.Second,
	ConnOutputBuffer:       4 << 20,
	ConnResponseBuffer:     8 << 20,
	ResponseBuffer:         256 << 20,
	BackendStreamWindow:    64 << 10,
	PingMinTime:            5 * time.Second,
	ResetsPerSecond:        100,
	ControlFramesPerSecond: 100,
	AbuseReconnectInterval: 100 * time.Millisecond,
}

// WithDefaults fills zero fields from DefaultLimits.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits
	if l.MaxConcurrentStreams == 0 {
		l.MaxConcurrentStreams = d.MaxConcurrentStreams
	}
	if l.MaxHeaderListSize <= 0 {
		l.MaxHeaderListSize = d.MaxHeaderListSize
	}
	if l.HandshakeTimeout <= 0 {
		l.HandshakeTimeout = d.HandshakeTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = d.IdleTimeout
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = d.WriteTimeout
	}
	if l.ConnOutputBuffer <= 0 {
		l.ConnOutputBuffer = d.ConnOutputBuffer
	}
	if l.ConnResponseBuffer <= 0 {
		l.ConnResponseBuffer = d.ConnResponseBuffer
	}
	if l.ResponseBuffer <= 0 {
		l.ResponseBuffer = d.ResponseBuffer
	}
	if l.BackendStreamWindow <= 0 {
		l.BackendStreamWindow = d.BackendStreamWindow
	}
	// A window is at most 2^31-1 (RFC 9113 section 6.9.1), and HTTP/2
	// starts every stream at 65535.
	l.BackendStreamWindow = min(max(l.BackendStreamWindow, http2DefaultWindow), maxWindow)
	if l.PingMinTime <= 0 {
		l.PingMinTime = d.PingMinTime
	}
	if l.PingWithoutCalls == nil {
		yes := true
		l.PingWithoutCalls = &yes
	}
	if l.ResetsPerSecond <= 0 {
		l.ResetsPerSecond = d.ResetsPerSecond
	}
	if l.ControlFramesPerSecond <= 0 {
		l.ControlFramesPerSecond = d.ControlFramesPerSecond
	}
	if l.AbuseReconnectInterval == 0 {
		l.AbuseReconnectInterval = d.AbuseReconnectInterval
	}
	return l
}

// Server is the client-facing half of the relay engine: it accepts client
// connections and hands their calls to a Handler.
type Server struct {
	h        Handler
	lim      Limits
	maxMsg   int
	log      *slog.Logger
	creds    credentials.TransportCredentials
	hook     CallHook
	obs      Observer
	service  string
	methods  map[string]int // :path -> index in ServerOptions.Methods
	paths    []string       // by method index
	streamed []bool         // by method index: a streaming method
	work     chan *Call
	stopW    chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup // workers
	active   inflight       // streams being handled
	connWG   sync.WaitGroup // client connections being served
	budget   *respBudget    // the process-wide response budget
	penalty  *PeerPenalty   // nil: off
	acks     ackFlusher     // the client connections' PING acknowledgements

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*dconn]struct{}
	draining  bool
}

// NewServer starts the server's workers; nothing listens until Serve.
// Shutdown stops the workers.
func NewServer(o ServerOptions) *Server {
	r := &Server{h: o.Handler, lim: o.Limits.WithDefaults(), maxMsg: o.MaxMessageSize, log: o.Logger,
		creds: o.Creds, hook: o.CallHook, obs: o.Observer, service: o.Service,
		methods: make(map[string]int, len(o.Methods)), paths: make([]string, len(o.Methods)), streamed: make([]bool, len(o.Methods)),
		work: make(chan *Call), stopW: make(chan struct{}),
		listeners: map[net.Listener]struct{}{}, conns: map[*dconn]struct{}{}}
	r.penalty = NewPeerPenalty(r.lim.AbuseReconnectInterval)
	r.budget = newRespBudget(r.lim.ResponseBuffer, func(ev Event) { r.event(ev, "") })
	for i, m := range o.Methods {
		r.methods[m.Path] = i
		r.paths[i], r.streamed[i] = m.Path, m.Stream
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	// Workers block on backend round trips, so there are many: enough
	// that new goroutines (whose stacks grow on every call) are rare.
	n := max(64, 16*runtime.GOMAXPROCS(0))
	r.wg.Add(n)
	for i := 0; i < n; i++ {
		go r.worker()
	}
	return r
}

// worker runs unary calls. Long-lived workers keep their grown stacks; when
// all are busy, dispatch starts a goroutine instead of queueing.
func (r *Server) worker() {
	defer r.wg.Done()
	for {
		select {
		case st := <-r.work:
			st.d.runUnary(st)
		case <-r.stopW:
			return
		}
	}
}

func (r *Server) dispatch(st *Call) {
	select {
	case r.work <- st:
	default:
		go st.d.runUnary(st)
	}
}

// Serve accepts connections on lis until Shutdown; it returns nil after a
// Shutdown, and grpc.ErrServerStopped if Shutdown came first.
func (r *Server) Serve(lis net.Listener) error {
	r.mu.Lock()
	if r.draining {
		r.mu.Unlock()
		return grpc.ErrServerStopped
	}
	r.listeners[lis] = struct{}{}
	r.mu.Unlock()
	var delay time.Duration
	for {
		nc, err := lis.Accept()
		if err != nil {
			r.mu.Lock()
			draining := r.draining
			delete(r.listeners, lis)
			r.mu.Unlock()
			if draining {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Anything else (EMFILE, ENFILE, ENOBUFS, a timeout)
			// passes: wait and accept again, as net/http does,
			// rather than stop serving everyone.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			r.log.Warn("proxy: accept failed; retrying", "err", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		go r.handshake(nc)
	}
}

func (r *Server) handshake(nc net.Conn) {
	if !r.penalty.Hold(nc) {
		r.event(EventConnClosed, "penalty")
		nc.Close()
		return
	}
	if creds := r.creds; creds != nil {
		_ = nc.SetDeadline(time.Now().Add(r.lim.HandshakeTimeout))
		c, _, err := creds.ServerHandshake(nc)
		if err != nil {
			r.log.Debug("proxy: TLS handshake failed", "remote", nc.RemoteAddr(), "err", err)
			nc.Close()
			return
		}
		_ = c.SetDeadline(time.Time{})
		nc = c
	}
	d := newDconn(r, nc)
	r.mu.Lock()
	if r.draining {
		r.mu.Unlock()
		nc.Close()
		return
	}
	r.conns[d] = struct{}{}
	// Added under mu while not draining: shutdown's Wait, which starts
	// after draining is set, never races an Add.
	r.connWG.Add(1)
	r.mu.Unlock()
	defer r.connWG.Done()
	go d.out.run()
	d.serve()
	<-d.out.done // bounded by closeLinger: close made it finish
	r.mu.Lock()
	delete(r.conns, d)
	r.mu.Unlock()
}

// Conns is the number of client connections being served.
func (r *Server) Conns() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}

// Shutdown stops accepting, tells every client to go away, waits for the
// calls in flight until ctx ends, then closes everything. It returns
// ctx.Err() when it had to cut calls.
func (r *Server) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	r.draining = true
	for lis := range r.listeners {
		lis.Close()
	}
	conns := make([]*dconn, 0, len(r.conns))
	for d := range r.conns {
		conns = append(conns, d)
	}
	r.mu.Unlock()
	phases := make([]<-chan struct{}, 0, len(conns))
	for _, d := range conns {
		phases = append(phases, d.goAway())
	}
	// Streams still on the wire when the drain began are accepted until
	// each connection's final GOAWAY; only then is "no call in flight"
	// meaningful.
	for _, ch := range phases {
		select {
		case <-ch:
		case <-ctx.Done():
		}
	}
	err := r.active.wait(ctx)
	if err == nil {
		// Every call is answered, but fast-path answers may still sit in
		// a connection's buffer: close gracefully and wait for that.
		r.mu.Lock()
		for d := range r.conns {
			d.closeGracefully()
		}
		r.mu.Unlock()
		conns := make(chan struct{})
		go func() {
			r.connWG.Wait()
			close(conns)
		}()
		select {
		case <-conns:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err != nil {
		r.mu.Lock()
		for d := range r.conns {
			d.close(errConnClosed)
		}
		r.mu.Unlock()
	}
	r.stopOnce.Do(func() { close(r.stopW) })
	if err == nil {
		r.wg.Wait()
	} // else calls were cut; their workers end as their contexts do.
	return err
}

// dconn is one client connection.
type dconn struct {
	r      *Server
	nc     net.Conn
	remote string
	br     *bufio.Reader
	fl     flushList // the reader goroutine's deferred flushes
	fr     *http2.Framer
	hr     *headerReader
	w      h2writer
	out    *connOut // the writer goroutine's side of w
	budget *connBudget
	flow   flow
	ctx    context.Context
	cancel context.CancelFunc
	// readerDone is closed when serve's read loop has ended: the client
	// closed the connection, or it failed.
	readerDone chan struct{}

	mu         sync.Mutex
	streams    map[uint32]*Call
	maxID      uint32        // highest stream id the client opened
	draining   bool          // first GOAWAY phase sent (streams still accepted)
	goneAwayCh chan struct{} // closed when the second phase is sent
	goneAway   bool          // we sent the final GOAWAY: no new streams
	lastID     uint32        // the GOAWAY's last stream id
	closing    bool          // closeGracefully started
	closed     bool
	recvConn   int
	// streamsSeen counts streams opened; checkIdle compares it with
	// idleSeen, its value at the last check.
	streamsSeen, idleSeen uint64
	idle                  *time.Timer
	closedIDs             [16]uint32 // the last streams that ended, a ring
	closedNext            int

	// rejects are answers to non-gRPC requests waiting for window
	// credit (reader goroutine only).
	rejects []*Call

	// The reader goroutine's abuse accounting.
	resetBudget, ctrlBudget rateBudget
	lastPing                time.Time
	pingStrikes             int
}

func newDconn(r *Server, nc net.Conn) *dconn {
	d := &dconn{r: r, nc: nc, remote: nc.RemoteAddr().String(), streams: map[uint32]*Call{},
		readerDone: make(chan struct{})}
	var rd io.Reader = nc
	if rs := newRawSocket(nc); rs != nil {
		rd = rs
	}
	d.br = bufio.NewReaderSize(rd, 32<<10)
	lim := &r.lim
	d.out = newConnOut(&d.w, nc, &d.flow, int64(lim.ConnOutputBuffer), lim.WriteTimeout)
	d.budget = newConnBudget(r.budget, int64(lim.ConnResponseBuffer), d.out)
	d.out.resp = d.budget
	d.out.fail = func(err error) {
		var ne net.Error
		switch {
		case errors.Is(err, errOutputOverflow):
			d.r.event(EventConnClosed, "output_overflow")
		case errors.As(err, &ne) && ne.Timeout():
			d.r.event(EventConnClosed, "write_timeout")
		}
		d.r.log.Debug("proxy: closing a client connection", "remote", d.remote, "err", err)
		d.close(err)
	}
	d.fr = http2.NewFramer(d.out, d.br)
	d.fr.SetMaxReadFrameSize(MaxFrameSize)
	// DATA frames are copied out (msgAssembler) before the next read:
	// the framer may reuse one DataFrame.
	d.fr.SetReuseFrames()
	d.hr = newHeaderReader(lim.MaxHeaderListSize)
	d.w.init(d.out, d.fr)
	d.w.acks = &r.acks
	d.flow.init()
	d.flow.out = d.out
	d.ctx, d.cancel = context.WithCancel(context.Background())
	return d
}

// Call kinds.
const (
	kindUnary = iota
	kindStream
	kindHealthCheck
	kindHealthWatch
	// kindReject is a request that is not gRPC (HTTP 405 or 415): its
	// body is read and dropped, then it is answered, as an HTTP server
	// would, never forwarded.
	kindReject
)

func (st *Call) sendFlow() *streamFlow { return &st.sf }

// Call is one client call: the relay's state of a client stream. The
// Handler sees it through its methods (relay.go).
type Call struct {
	d      *dconn
	id     uint32
	kind   int
	method int // index in ServerOptions.Methods (unary and stream kinds)
	fwd    []hpack.HeaderField
	mdDB   string
	ident  string
	gzip   bool            // the client compresses its messages with gzip
	ctx    context.Context // &cctx, or a context the hook derived from it
	cctx   callCtx
	sf     streamFlow

	// Request assembly, by the reader goroutine.
	msg    msgAssembler
	recv   int  // stream DATA not yet returned as window
	ended  bool // the client half-closed
	queued bool // a unary request went to a worker (under d.mu: handOver)

	// Streaming methods: complete messages for the backend.
	in *msgQueue

	// clen is the request's content-length (-1: none), got the DATA
	// bytes received: RFC 9113 section 8.1.1 makes a mismatch malformed.
	clen, got int64
	// kindReject: the HTTP status and message, and the answer's body
	// while it waits for flow-control credit.
	rejectStatus, rejectMsg string
	pendingBody             []byte

	// abortUp is the backend stream a fast-path call waits on.
	abortUp atomic.Pointer[upRef]
	// acct is the call's charge against the connection's response
	// budget, released when the stream ends.
	acct respAcct

	// With Options.CallHook: what to call once the call's outcome is known.
	// hooked is set before the stream is published and never changes;
	// hookEnd is cleared (under hookMu) once called.
	hooked  bool
	hookMu  sync.Mutex
	hookEnd func(error)
	outcome error
	decided bool
}

// decide records the call's outcome (the first one stands), for the hook.
func (st *Call) decide(err error) {
	if !st.hooked {
		return
	}
	st.hookMu.Lock()
	if !st.decided {
		st.outcome, st.decided = err, true
	}
	st.hookMu.Unlock()
}

// endHook calls the hook's end function, once.
func (st *Call) endHook() {
	if !st.hooked {
		return
	}
	st.hookMu.Lock()
	end := st.hookEnd
	st.hookEnd = nil
	err := st.outcome
	if !st.decided {
		err = gstatus.Error(codes.Canceled, "milvus-ha-proxy: call ended without an answer")
	}
	st.hookMu.Unlock()
	if end != nil {
		end(err)
	}
}

func (d *dconn) serve() {
	defer d.close(errConnClosed)
	defer close(d.readerDone)
	lim := &d.r.lim
	_ = d.nc.SetReadDeadline(time.Now().Add(lim.HandshakeTimeout))
	var pre [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(d.br, pre[:]); err != nil || string(pre[:]) != http2.ClientPreface {
		return
	}
	_ = d.nc.SetReadDeadline(time.Time{})
	d.w.lock()
	d.w.writeSettings(relayStreamWindow, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: lim.MaxConcurrentStreams},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: uint32(lim.MaxHeaderListSize)})
	d.w.unlock()
	idle := time.AfterFunc(lim.IdleTimeout, d.checkIdle)
	defer idle.Stop()
	d.mu.Lock()
	d.idle = idle
	d.mu.Unlock()
	defer d.fl.flush()
	for {
		if d.br.Buffered() == 0 {
			d.fl.flush() // everything this read produced, in one write each
		}
		f, err := d.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				if st := d.stream(se.StreamID); st != nil {
					d.abortStream(st, se.Code)
				} else {
					d.resetStream(se.StreamID, se.Code)
				}
				continue
			}
			var ce http2.ConnectionError
			switch {
			case errors.As(err, &ce):
				d.goAwayNow(http2.ErrCode(ce), "")
				d.lingerRead()
			case errors.Is(err, http2.ErrFrameTooLarge):
				// RFC 9113 section 4.2: a frame over our
				// SETTINGS_MAX_FRAME_SIZE is a connection error.
				d.goAwayNow(http2.ErrCodeFrameSize, "")
				d.lingerRead()
			}
			return
		}
		if err := d.onFrame(f); err != nil {
			ce := connError{code: http2.ErrCodeProtocol, msg: err.Error()}
			errors.As(err, &ce)
			d.r.event(EventConnClosed, ce.reason())
			if ce.reason() == "abuse" {
				d.r.penalty.Abused(d.remote, time.Now())
			}
			d.r.log.Debug("proxy: closing a client connection", "remote", d.remote, "code", ce.code, "err", ce.msg)
			d.goAwayNow(ce.code, ce.debug)
			d.lingerRead()
			return
		}
	}
}

// lingerRead reads and drops what the client still sends, for at most
// closeLinger, after a GOAWAY that ends the connection: closing a socket
// with unread bytes makes the kernel send a RST, and the client may lose
// the GOAWAY that says why (Go's net/http2 server waits the same way).
func (d *dconn) lingerRead() {
	d.out.signal()
	_ = d.nc.SetReadDeadline(time.Now().Add(closeLinger))
	_, _ = io.Copy(io.Discard, d.br)
}

// connError is a connection error (RFC 9113 section 5.4.1): the
// connection ends with GOAWAY code and debug data.
type connError struct {
	code  http2.ErrCode
	debug string // GOAWAY debug data, for the client
	msg   string // for the log
}

func (e connError) Error() string { return e.code.String() + ": " + e.msg }

// reason is the metric label of the close.
func (e connError) reason() string {
	if e.code == http2.ErrCodeEnhanceYourCalm {
		if e.debug == "too_many_pings" {
			return "too_many_pings"
		}
		return "abuse"
	}
	return "protocol_error"
}

func protocolError(code http2.ErrCode, msg string) error { return connError{code: code, msg: msg} }

func calmError(msg string) error {
	return connError{code: http2.ErrCodeEnhanceYourCalm, debug: msg, msg: msg}
}

// onFrame handles one frame on the reader goroutine; an error is a
// connection error.
func (d *dconn) onFrame(f http2.Frame) error {
	lim := &d.r.lim
	switch f := f.(type) {
	case *http2.HeadersFrame, *http2.ContinuationFrame:
		if c, ok := f.(*http2.ContinuationFrame); ok && len(c.HeaderBlockFragment()) == 0 && !c.HeadersEnded() {
			if !d.ctrlBudget.take(time.Now(), float64(lim.ControlFramesPerSecond), 10*float64(lim.ControlFramesPerSecond)) {
				return calmError("too many empty frames")
			}
		}
		fields, complete, err := d.hr.read(f)
		if err != nil {
			if errors.Is(err, errHeaderBlock) {
				d.r.event(EventRefused, "header_block")
				return calmError("header block too large or too slow")
			}
			return protocolError(http2.ErrCodeCompression, err.Error())
		}
		if complete {
			return d.onHeaders(d.hr.streamID, d.hr.endStream, fields, d.hr.selfDep)
		}
	case *http2.DataFrame:
		return d.onData(f)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		if !d.ctrlBudget.take(time.Now(), float64(lim.ControlFramesPerSecond), 10*float64(lim.ControlFramesPerSecond)) {
			return calmError("too many SETTINGS")
		}
		if err := d.onSettings(f); err != nil {
			return err
		}
		if len(d.rejects) > 0 {
			d.sendRejects()
		}
	case *http2.PingFrame:
		if f.IsAck() {
			if f.Data == drainPing {
				d.finishGoAway()
			}
			return nil
		}
		if !d.pingAllowed() {
			return connError{code: http2.ErrCodeEnhanceYourCalm, debug: "too_many_pings", msg: "too many pings"}
		}
		d.w.writePingAckLazy(f.Data)
	case *http2.WindowUpdateFrame:
		if f.StreamID == 0 {
			if !d.flow.addConn(int64(f.Increment)) {
				return protocolError(http2.ErrCodeFlowControl, "connection window over 2^31-1")
			}
			if len(d.rejects) > 0 {
				d.sendRejects()
			}
			return nil
		}
		st := d.stream(f.StreamID)
		if st == nil {
			if d.isIdle(f.StreamID) {
				return protocolError(http2.ErrCodeProtocol, "WINDOW_UPDATE on an idle stream")
			}
			return nil
		}
		if !d.flow.addStream(&st.sf, int64(f.Increment)) {
			d.abortStream(st, http2.ErrCodeFlowControl)
		} else if len(d.rejects) > 0 {
			d.sendRejects()
		}
	case *http2.RSTStreamFrame:
		st := d.stream(f.StreamID)
		if st == nil {
			if d.isIdle(f.StreamID) {
				return protocolError(http2.ErrCodeProtocol, "RST_STREAM on an idle stream")
			}
			return nil
		}
		// A reset of a call not answered yet: cheap for the client,
		// not for the proxy and the cluster (CVE-2023-44487).
		if !d.resetBudget.take(time.Now(), float64(lim.ResetsPerSecond), 10*float64(lim.ResetsPerSecond)) {
			return calmError("too many stream resets")
		}
		// The call's context ends first, so that whoever judges the
		// aborted backend stream sees a client's cancel, not a
		// cluster's failure.
		st.cctx.cancel()
		if up := st.abortUp.Load(); up != nil {
			up.abort()
		}
		st.decide(gstatus.Error(codes.Canceled, "milvus-ha-proxy: the client reset the stream"))
		d.endStream(st)
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			// RFC 9113 section 5.3.1: a stream depending on itself.
			if st := d.stream(f.StreamID); st != nil {
				d.abortStream(st, http2.ErrCodeProtocol)
			} else {
				d.resetStream(f.StreamID, http2.ErrCodeProtocol)
			}
		}
	case *http2.PushPromiseFrame:
		return protocolError(http2.ErrCodeProtocol, "PUSH_PROMISE from a client")
	case *http2.GoAwayFrame:
		// The client opens no more streams; those in flight finish.
	}
	return nil
}

// pingAllowed applies the keepalive enforcement policy to a PING, as
// grpc-go's server does: a ping sooner than PingMinTime after the last
// one (or, unless PingWithoutCalls, with no call open) is a strike, an
// answer sent since the last ping forgives them, and the third strike is
// one too many.
func (d *dconn) pingAllowed() bool {
	lim := &d.r.lim
	now := time.Now()
	if d.w.answered.Swap(false) {
		d.pingStrikes = 0
	}
	strike := !d.lastPing.IsZero() && now.Sub(d.lastPing) < lim.PingMinTime
	if !*lim.PingWithoutCalls {
		d.mu.Lock()
		strike = strike || len(d.streams) == 0
		d.mu.Unlock()
	}
	d.lastPing = now
	if strike {
		d.pingStrikes++
	}
	return d.pingStrikes <= 2
}

// isIdle reports whether stream id was never opened (RFC 9113 section
// 5.1: frames other than HEADERS and PRIORITY on it are a connection
// error).
func (d *dconn) isIdle(id uint32) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return id > d.maxID
}

// recentlyClosed reports whether stream id is among the last streams
// that ended (under d.mu).
func (d *dconn) recentlyClosed(id uint32) bool {
	for _, x := range d.closedIDs {
		if x == id {
			return true
		}
	}
	return false
}

// checkIdle runs every IdleTimeout: a connection that had no call open
// and started none for a whole period goes away gracefully.
func (d *dconn) checkIdle() {
	d.mu.Lock()
	idle := len(d.streams) == 0 && d.streamsSeen == d.idleSeen && !d.closed && !d.draining
	d.idleSeen = d.streamsSeen
	d.mu.Unlock()
	if idle {
		d.r.event(EventConnClosed, "idle")
		d.goAway()
		return
	}
	d.mu.Lock()
	if !d.closed && d.idle != nil {
		d.idle.Reset(d.r.lim.IdleTimeout)
	}
	d.mu.Unlock()
}

// abortStream resets a stream the client may still be using and ends its
// call.
func (d *dconn) abortStream(st *Call, code http2.ErrCode) {
	st.cctx.cancel()
	if up := st.abortUp.Load(); up != nil {
		up.abort()
	}
	st.decide(gstatus.Errorf(codes.Canceled, "milvus-ha-proxy: stream reset (%v)", code))
	d.resetStream(st.id, code)
	d.endStream(st)
}

// goAwayNow sends GOAWAY with code, naming the highest stream seen (read
// under the writer's lock, after any frame written before it).
func (d *dconn) goAwayNow(code http2.ErrCode, debug string) {
	d.w.lock()
	if d.w.err == nil {
		d.w.err = d.fr.WriteGoAway(d.maxStreamID(), code, []byte(debug))
	}
	d.w.unlock()
}

func (d *dconn) maxStreamID() uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.maxID
}

func (d *dconn) stream(id uint32) *Call {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.streams[id]
}

// drainPing is the payload of the PING that ends the first phase of a
// graceful GOAWAY.
var drainPing = [8]byte{'m', 'h', 'p', 'd', 'r', 'a', 'i', 'n'}

// drainPingTimeout bounds the wait for the client's PING ack.
const drainPingTimeout = time.Second

// goAway starts a graceful GOAWAY in two phases, as grpc-go's server does:
// a GOAWAY with the largest stream id and a PING first, so streams the
// client sent before it saw the GOAWAY (still on the wire) are not
// refused; then, once the PING comes back (or after drainPingTimeout), the
// real GOAWAY naming the last stream accepted. The returned channel is
// closed once the second phase is sent; the connection closes when its
// last stream ends.
func (d *dconn) goAway() <-chan struct{} {
	d.mu.Lock()
	if d.draining || d.closed {
		ch := d.goneAwayCh
		d.mu.Unlock()
		if ch == nil {
			ch = make(chan struct{})
			close(ch)
		}
		return ch
	}
	d.draining = true
	d.goneAwayCh = make(chan struct{})
	ch := d.goneAwayCh
	d.mu.Unlock()
	d.w.lock()
	if d.w.err == nil {
		d.w.err = d.fr.WriteGoAway(math.MaxInt32, http2.ErrCodeNo, nil)
	}
	if d.w.err == nil {
		d.w.err = d.fr.WritePing(false, drainPing)
	}
	failed := d.w.err != nil
	d.w.unlock()
	if failed {
		d.finishGoAway()
		return ch
	}
	go func() {
		t := time.NewTimer(drainPingTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			d.finishGoAway()
		case <-ch:
		case <-d.ctx.Done():
			d.finishGoAway()
		}
	}()
	return ch
}

// finishGoAway is the second phase of goAway: no new streams after the
// last one accepted.
func (d *dconn) finishGoAway() {
	d.mu.Lock()
	if d.goneAway {
		d.mu.Unlock()
		return
	}
	d.goneAway = true
	d.lastID = d.maxID
	idle := len(d.streams) == 0
	closed := d.closed
	ch := d.goneAwayCh
	d.mu.Unlock()
	if ch != nil {
		close(ch)
	}
	if closed {
		return
	}
	d.w.lock()
	if d.w.err == nil {
		d.w.err = d.fr.WriteGoAway(d.lastID, http2.ErrCodeNo, nil)
	}
	d.w.unlock()
	if idle {
		d.closeGracefully()
	}
}

// closeLinger bounds how long a gracefully closed connection waits for the
// client to close its side.
const closeLinger = time.Second

// closeGracefully closes a connection whose calls are all answered. What
// is still buffered goes out first: a fast-path answer leaves its flush to
// the backend connection's reader goroutine, which may not have run yet.
// The socket itself is closed once the client has closed its side (it does
// on a GOAWAY with no streams left), or after closeLinger: closing while
// the client's frames (PING acks, WINDOW_UPDATEs) sit unread makes the
// kernel answer with a RST, and the client may then drop answers it had
// not read yet (as grpc-go's server does, grpc/grpc-go#5358).
func (d *dconn) closeGracefully() {
	d.mu.Lock()
	if d.closed || d.closing {
		d.mu.Unlock()
		return
	}
	d.closing = true
	d.mu.Unlock()
	go func() {
		// A client that does not read cannot hold the flush (or us)
		// past closeLinger: close unblocks it.
		t := time.AfterFunc(closeLinger, func() { d.close(errConnClosed) })
		defer t.Stop()
		d.out.signal()
		select {
		case <-d.readerDone:
		case <-d.ctx.Done():
		}
		d.close(errConnClosed)
	}()
}

func (d *dconn) close(err error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.closed = true
	streams := d.streams
	d.streams = map[uint32]*Call{}
	d.mu.Unlock()
	d.cancel()
	d.flow.close()
	for _, st := range streams {
		st.cctx.cancel()
		// A fast-path call's backend stream ends with the client's
		// connection: the cluster stops working (and sending) for a
		// client that left, and the answer's memory goes with it.
		if up := st.abortUp.Load(); up != nil {
			up.abort()
		}
		if st.in != nil {
			st.in.close(err)
		}
		if !st.queued && st.kind != kindStream {
			d.r.active.Done()
		}
	}
	// What is written goes out (a GOAWAY, answers already given) within
	// closeLinger; then the writer closes the socket. The reader stops
	// now.
	d.out.finish(closeLinger)
	if d.budget.peaked.Load() {
		// It made the proxy hold answers: once its calls ended (their
		// backend streams are reset above), memory may go back.
		time.AfterFunc(time.Second, d.r.budget.connLeft)
	}
	_ = d.nc.SetReadDeadline(time.Now())
}

func (d *dconn) onSettings(f *http2.SettingsFrame) error {
	if err := f.ForeachSetting(func(s http2.Setting) error { return s.Valid() }); err != nil {
		var ce http2.ConnectionError
		if errors.As(err, &ce) {
			return protocolError(http2.ErrCode(ce), err.Error())
		}
		return protocolError(http2.ErrCodeProtocol, err.Error())
	}
	if !applySettings(f, &d.w, &d.flow, &d.mu, &d.streams, nil) {
		return protocolError(http2.ErrCodeFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE takes a window over 2^31-1")
	}
	return nil
}

var (
	healthCheckPath = "/grpc.health.v1.Health/Check"
	healthWatchPath = "/grpc.health.v1.Health/Watch"
)

// onHeaders takes a complete header block from the client (fields nil:
// over the header list limit): trailers on an open stream, or a new
// stream, checked (id, limits, headers) and opened as a call, a health
// check, a stream or a refusal.
func (d *dconn) onHeaders(id uint32, ended bool, fields []hpack.HeaderField, selfDep bool) error {
	d.mu.Lock()
	if st := d.streams[id]; st != nil {
		d.mu.Unlock()
		return d.onTrailers(st, ended, fields)
	}
	refuse, err := d.newStreamID(id) // unlocks d.mu
	switch {
	case err != nil:
		return err
	case refuse:
		d.r.event(EventRefused, "streams")
		d.resetStream(id, http2.ErrCodeRefusedStream)
		return nil
	}
	if !d.admitHeaders(id, ended, fields, selfDep) {
		return nil
	}
	st := &Call{d: d, id: id, clen: -1}
	st.acct.b = d.budget
	if !setContentLength(st, fields) {
		d.r.event(EventRefused, "malformed")
		d.resetStream(id, http2.ErrCodeProtocol)
		return nil
	}
	path, timeout, hasTimeout, ok := d.readRequestFields(st, fields)
	if !ok || !d.setMethod(st, path, ended) {
		return nil
	}
	st.cctx.init(d.ctx, timeout, hasTimeout)
	st.ctx = &st.cctx
	if d.r.hook != nil {
		d.runHook(st, path)
	}
	d.addStream(st)
	if st.kind == kindStream {
		st.in = newMsgQueue()
		go d.runStream(st)
	}
	if ended {
		d.onClientEnd(st)
	}
	return nil
}

// onTrailers takes HEADERS on a stream the client opened: trailers (gRPC
// clients send none), which must end the stream and carry no
// pseudo-header (RFC 9113 section 8.1).
func (d *dconn) onTrailers(st *Call, ended bool, fields []hpack.HeaderField) error {
	if st.ended {
		// RFC 9113 section 5.1: half-closed (remote).
		return protocolError(http2.ErrCodeStreamClosed, "HEADERS on a half-closed stream")
	}
	if !ended || fields == nil || !checkTrailers(fields) {
		d.r.event(EventRefused, "malformed")
		d.abortStream(st, http2.ErrCodeProtocol)
		return nil
	}
	d.onClientEnd(st)
	return nil
}

// newStreamID checks the id of a stream the client opens (under d.mu,
// which it releases): a connection error for an even, closed or
// decreasing id (RFC 9113 section 5.1.1), else it becomes the highest
// opened; refuse when the stream must be refused (GOAWAY sent, closed,
// or SETTINGS_MAX_CONCURRENT_STREAMS reached).
func (d *dconn) newStreamID(id uint32) (refuse bool, err error) {
	defer d.mu.Unlock()
	switch {
	case id%2 == 0:
		return false, protocolError(http2.ErrCodeProtocol, "HEADERS on an even stream id")
	case id <= d.maxID && d.recentlyClosed(id):
		return false, protocolError(http2.ErrCodeStreamClosed, "HEADERS on a closed stream")
	case id <= d.maxID:
		return false, protocolError(http2.ErrCodeProtocol, "HEADERS on a stream id lower than one already used")
	}
	d.maxID = id
	d.streamsSeen++
	return d.goneAway || d.closed || uint32(len(d.streams)) >= d.r.lim.MaxConcurrentStreams, nil
}

// admitHeaders answers a new stream's request headers that are not a
// gRPC call we take (a header list over the limit, a self-dependency,
// malformed headers, a request that is not gRPC) and reports whether
// they are one.
func (d *dconn) admitHeaders(id uint32, ended bool, fields []hpack.HeaderField, selfDep bool) bool {
	if fields == nil {
		d.r.event(EventRefused, "header_list")
		d.respondHeadersOnly(id, codes.ResourceExhausted, "milvus-ha-proxy: header list too large")
		if !ended {
			d.resetStream(id, http2.ErrCodeNo)
		}
		return false
	}
	if selfDep {
		d.r.event(EventRefused, "malformed")
		d.resetStream(id, http2.ErrCodeProtocol)
		return false
	}
	switch verdict, msg := checkRequest(fields); verdict {
	case headersMalformed:
		d.r.event(EventRefused, "malformed")
		d.r.log.Debug("proxy: malformed request", "remote", d.remote, "stream", id, "problem", msg)
		d.resetStream(id, http2.ErrCodeProtocol)
		return false
	case headersBadMethod, headersBadContentType:
		d.r.event(EventRefused, "not_grpc")
		d.openReject(id, ended, fields, verdict == headersBadContentType, msg)
		return false
	}
	return true
}

// openReject opens a stream for a request that is not gRPC: its body is
// read and dropped, then it is answered 405 (415 for a bad content type).
func (d *dconn) openReject(id uint32, ended bool, fields []hpack.HeaderField, badContentType bool, msg string) {
	st := &Call{d: d, id: id, kind: kindReject, rejectStatus: "405", rejectMsg: "milvus-ha-proxy: " + msg, clen: -1}
	st.acct.b = d.budget
	if badContentType {
		st.rejectStatus = "415"
	}
	if !setContentLength(st, fields) {
		d.resetStream(id, http2.ErrCodeProtocol)
		return
	}
	st.cctx.init(d.ctx, 0, false)
	st.ctx = &st.cctx
	d.addStream(st)
	if ended {
		d.onClientEnd(st)
	}
}

// readRequestFields takes from a call's request headers its path, its
// timeout, its encoding, the database and identifier, and the metadata
// that goes on (st.fwd, in fields' own array); false when the encoding is
// one we cannot read (answered Unimplemented).
func (d *dconn) readRequestFields(st *Call, fields []hpack.HeaderField) (path string, timeout time.Duration, hasTimeout, ok bool) {
	fwd := fields[:0]
	for _, hf := range fields {
		switch hf.Name {
		case ":path":
			path = hf.Value
			continue
		case "grpc-timeout":
			timeout, hasTimeout = parseGRPCTimeout(hf.Value)
			continue
		case "grpc-encoding":
			st.gzip = hf.Value == "gzip"
			if hf.Value != "gzip" && hf.Value != "identity" {
				d.respondHeadersOnly(st.id, codes.Unimplemented, "milvus-ha-proxy: unsupported grpc-encoding "+hf.Value)
				return "", 0, false, false
			}
			continue
		case "dbname":
			st.mdDB = hf.Value
		case "identifier":
			st.ident = hf.Value
		}
		if Forwardable(hf.Name) {
			fwd = append(fwd, hf)
		}
	}
	st.fwd = fwd
	return path, timeout, hasTimeout, true
}

// setMethod sets the call's kind and method from its path; false when
// the method is unknown (answered Unimplemented).
func (d *dconn) setMethod(st *Call, path string, ended bool) bool {
	switch path {
	case healthCheckPath:
		st.kind = kindHealthCheck
	case healthWatchPath:
		st.kind = kindHealthWatch
	default:
		m, ok := d.r.methods[path]
		if !ok {
			d.respondHeadersOnly(st.id, codes.Unimplemented, "milvus-ha-proxy: unknown method "+path)
			if !ended {
				d.resetStream(st.id, http2.ErrCodeNo)
			}
			return false
		}
		st.method = m
		if d.r.streamed[m] {
			st.kind = kindStream
		}
	}
	return true
}

// runHook runs the server's CallHook: it sees (and may change) the
// metadata going on, as a grpc interceptor would; user-agent is kept as
// it came.
func (d *dconn) runHook(st *Call, path string) {
	var keep []hpack.HeaderField
	for _, hf := range st.fwd {
		if hf.Name == "user-agent" {
			keep = append(keep, hf)
		}
	}
	md := fieldsMD(st.fwd)
	st.ctx, st.hookEnd = d.r.hook(st.ctx, path, md)
	st.hooked = st.hookEnd != nil
	st.fwd = mdFields(keep, md)
}

// addStream registers a new stream with the send window the client's
// SETTINGS give it.
func (d *dconn) addStream(st *Call) {
	d.r.active.Add(1)
	d.mu.Lock()
	d.flow.mu.Lock()
	st.sf.win = d.flow.initial
	d.flow.mu.Unlock()
	d.streams[st.id] = st
	d.mu.Unlock()
}

// setContentLength reads a request's content-length, if any; false: it
// is not a number.
func setContentLength(st *Call, fields []hpack.HeaderField) bool {
	for _, f := range fields {
		if f.Name == "content-length" {
			n, err := strconv.ParseUint(f.Value, 10, 62)
			if err != nil {
				return false
			}
			st.clen = int64(n)
		}
	}
	return true
}

// answerReject answers a request that is not gRPC, once its body has
// been read: the HTTP status with, as grpc-go's server, grpc-status
// Internal, and the reason as a text body (sent when the client's windows
// admit it, from this goroutine: it never waits).
func (d *dconn) answerReject(st *Call) {
	d.w.lock()
	d.w.writeHeaders(st.id, false, []hpack.HeaderField{{Name: ":status", Value: st.rejectStatus},
		{Name: "content-type", Value: "text/plain; charset=utf-8"},
		{Name: "grpc-status", Value: itoa(int(codes.Internal))}, {Name: "grpc-message", Value: encodeGRPCMessage(st.rejectMsg)}})
	d.w.unlockDefer(&d.fl)
	st.pendingBody = []byte(st.rejectMsg + "\n")
	d.rejects = append(d.rejects, st)
	d.sendRejects()
}

// sendRejects sends the bodies of rejected requests the windows now admit
// (after the answer, a WINDOW_UPDATE or SETTINGS).
func (d *dconn) sendRejects() {
	keep := d.rejects[:0]
	for _, st := range d.rejects {
		if d.stream(st.id) != st {
			continue // reset meanwhile
		}
		n := d.flow.takeNow(&st.sf, len(st.pendingBody))
		if n > 0 {
			d.w.lock()
			d.w.writeData(st.id, n == len(st.pendingBody), st.pendingBody[:n])
			d.w.unlockDefer(&d.fl)
			st.pendingBody = st.pendingBody[n:]
		}
		if len(st.pendingBody) > 0 {
			keep = append(keep, st)
			continue
		}
		d.endStream(st)
	}
	clear(d.rejects[len(keep):])
	d.rejects = keep
}

// onData takes request DATA. Connection credit is returned as it is
// read; stream credit as unary messages are buffered (they are bounded by
// the message size limit) or, for streaming methods, once the backend took
// the message.
func (d *dconn) onData(f *http2.DataFrame) error {
	n := int(f.Header().Length)
	st, sendConn := recvData(&d.mu, &d.streams, &d.recvConn, f.StreamID, n)
	if st == nil {
		d.w.writeWindowUpdates(0, sendConn, 0, &d.fl)
		d.mu.Lock()
		idle, closed := f.StreamID > d.maxID, d.recentlyClosed(f.StreamID)
		d.mu.Unlock()
		switch {
		case idle:
			return protocolError(http2.ErrCodeProtocol, "DATA on an idle stream")
		case closed:
			// RFC 9113 section 5.1: closed (DATA may also still
			// be in flight after our answer; a reset is harmless).
			d.resetStream(f.StreamID, http2.ErrCodeStreamClosed)
		}
		return nil
	}
	if st.ended {
		// RFC 9113 section 5.1: half-closed (remote).
		d.w.writeWindowUpdates(0, sendConn, 0, &d.fl)
		d.abortStream(st, http2.ErrCodeStreamClosed)
		return nil
	}
	if n == 0 && !f.StreamEnded() {
		lim := &d.r.lim
		if !d.ctrlBudget.take(time.Now(), float64(lim.ControlFramesPerSecond), 10*float64(lim.ControlFramesPerSecond)) {
			return calmError("too many empty frames")
		}
	}
	st.got += int64(len(f.Data())) // padding is not content
	if st.clen >= 0 && st.got > st.clen {
		d.w.writeWindowUpdates(0, sendConn, 0, &d.fl)
		d.r.event(EventRefused, "malformed")
		d.abortStream(st, http2.ErrCodeProtocol)
		return nil
	}
	if st.kind == kindReject {
		// Read and dropped: all credit goes back at once.
		d.w.writeWindowUpdates(f.StreamID, sendConn, n, &d.fl)
		if f.StreamEnded() {
			d.onClientEnd(st)
		}
		return nil
	}
	sendStream := 0
	msgs, err := st.msg.append(f.Data(), d.r.maxMsg)
	switch {
	case err != nil:
		d.r.event(EventRefused, "message_size")
		d.failStream(st, err)
		st = nil
	case st.in != nil:
		for _, m := range msgs {
			st.in.push(m)
		}
		st.msg.done = st.msg.done[:0]
		st.recv += n
	case len(st.msg.done) > 1 || (len(st.msg.done) == 1 && st.msg.partial()):
		// A unary call's second message: refused now, not buffered
		// until the client ends the stream (grpc-go: "cardinality
		// violation").
		d.r.event(EventRefused, "cardinality")
		d.failStream(st, gstatus.Errorf(codes.Internal, "milvus-ha-proxy: a unary call takes exactly one request message; got a second"))
		st = nil
	default:
		st.recv += n
		if !f.StreamEnded() && st.recv >= relayStreamUpdate {
			sendStream, st.recv = st.recv, 0
		}
	}
	d.w.writeWindowUpdates(f.StreamID, sendConn, sendStream, &d.fl)
	if st != nil && f.StreamEnded() {
		d.onClientEnd(st)
	}
	return nil
}

// onClientEnd runs when the client half-closes a stream.
func (d *dconn) onClientEnd(st *Call) {
	if st.ended {
		return
	}
	st.ended = true
	if st.clen >= 0 && st.got != st.clen {
		// RFC 9113 section 8.1.1: malformed.
		d.r.event(EventRefused, "malformed")
		d.abortStream(st, http2.ErrCodeProtocol)
		return
	}
	switch st.kind {
	case kindReject:
		d.answerReject(st)
	case kindStream:
		st.in.close(io.EOF)
	default:
		if !d.handOver(st) {
			return
		}
		d.startUnary(st, &d.fl)
	}
}

// handOver marks st's share of active as the worker's (or the fast
// path's), which ends it, unless the connection was closed: close, which
// may run on another goroutine (the writer failing, Shutdown), then
// released the share and cancelled the call, which must not start.
// queued is written under d.mu for close to read it after taking the
// streams.
func (d *dconn) handOver(st *Call) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	st.queued = true
	return true
}

// returnCredit gives a stream's consumed window back to the client.
func (d *dconn) returnCredit(id uint32, n int) {
	d.w.writeWindowUpdates(id, 0, n, nil)
}

func (d *dconn) resetStream(id uint32, code http2.ErrCode) {
	d.w.writeRSTStream(id, code)
}

// endStream forgets a stream: the client reset it, or its call is over.
func (d *dconn) endStream(st *Call) {
	st.endHook()
	d.mu.Lock()
	_, open := d.streams[st.id]
	delete(d.streams, st.id)
	if open {
		d.closedIDs[d.closedNext] = st.id
		d.closedNext = (d.closedNext + 1) % len(d.closedIDs)
	}
	idle := d.goneAway && len(d.streams) == 0
	d.mu.Unlock()
	st.cctx.cancel()
	st.acct.release()
	d.flow.resetStream(&st.sf)
	if st.in != nil {
		st.in.close(errStreamReset)
	}
	if open && !st.queued && st.kind != kindStream {
		// Its worker never ran: it holds no share of active.
		d.r.active.Done()
	}
	if idle {
		d.closeGracefully()
	}
}

// failStream answers a stream with an error before any worker has it.
func (d *dconn) failStream(st *Call, err error) {
	if !d.handOver(st) { // the answer below stands in for the worker
		return
	}
	st.decide(err)
	st.ended = true
	d.respondHeadersOnly(st.id, gstatus.Code(err), gstatus.Convert(err).Message())
	d.resetStream(st.id, http2.ErrCodeNo)
	d.endStream(st)
	d.r.active.Done()
}

var (
	hdrStatus200   = hpack.HeaderField{Name: ":status", Value: "200"}
	hdrContentType = hpack.HeaderField{Name: "content-type", Value: "application/grpc"}
	hdrGRPCStatus0 = hpack.HeaderField{Name: "grpc-status", Value: "0"}
)

// respondHeadersOnly answers a call with a trailers-only response.
func (d *dconn) respondHeadersOnly(id uint32, code codes.Code, msg string, extra ...hpack.HeaderField) {
	fields := []hpack.HeaderField{hdrStatus200, hdrContentType,
		{Name: "grpc-status", Value: itoa(int(code))}}
	if msg != "" {
		fields = append(fields, hpack.HeaderField{Name: "grpc-message", Value: encodeGRPCMessage(msg)})
	}
	fields = append(fields, extra...)
	d.w.lock()
	d.w.writeHeaders(id, true, fields)
	d.w.unlock()
}

func itoa(n int) string {
	if n >= 0 && n < 10 {
		return string(rune('0' + n))
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// runUnary handles one unary call on a worker.
func (d *dconn) runUnary(st *Call) {
	defer d.r.active.Done()
	defer d.endStream(st)
	req, err := st.request()
	if err != nil {
		d.respondErr(st, "", err)
		return
	}
	defer req.Free()
	switch st.kind {
	case kindHealthCheck:
		d.healthCheck(st, req)
		return
	case kindHealthWatch:
		d.healthWatch(st, req)
		return
	}
	resp, cluster, err := d.r.h.Unary(st, req)
	if err != nil {
		d.respondErr(st, cluster, err)
		return
	}
	d.respond(st, cluster, resp)
	resp.Free()
}

// request returns the stream's single request message, decompressed.
func (st *Call) request() (*rawmsg.Msg, error) {
	msgs := st.msg.done
	if len(msgs) != 1 || st.msg.partial() {
		for _, m := range msgs {
			m.Free()
		}
		return nil, gstatus.Errorf(codes.Internal, "milvus-ha-proxy: a unary call needs exactly one request message, got %d", len(msgs))
	}
	m := msgs[0]
	st.msg.done = nil
	return st.decompress(m)
}

func (st *Call) decompress(m *rawmsg.Msg) (*rawmsg.Msg, error) {
	if !m.Compressed {
		return m, nil
	}
	defer m.Free()
	if !st.gzip {
		return nil, gstatus.Errorf(codes.Internal, "milvus-ha-proxy: compressed message without grpc-encoding")
	}
	comp := encoding.GetCompressor("gzip")
	if comp == nil {
		return nil, gstatus.Errorf(codes.Unimplemented, "milvus-ha-proxy: gzip not available")
	}
	r, err := comp.Decompress(bytes.NewReader(m.Bytes()))
	if err != nil {
		return nil, gstatus.Errorf(codes.Internal, "milvus-ha-proxy: gzip: %v", err)
	}
	b, err := io.ReadAll(io.LimitReader(r, int64(st.d.r.maxMsg)+1))
	if err != nil {
		return nil, gstatus.Errorf(codes.Internal, "milvus-ha-proxy: gzip: %v", err)
	}
	if len(b) > st.d.r.maxMsg {
		return nil, gstatus.Errorf(codes.ResourceExhausted, "milvus-ha-proxy: message larger than %d bytes", st.d.r.maxMsg)
	}
	return &rawmsg.Msg{Data: mem.BufferSlice{mem.SliceBuffer(b)}}, nil
}

// respond writes a successful unary response: headers, message, trailers,
// in one write when the client's windows allow.
func (d *dconn) respond(st *Call, cluster string, resp *rawmsg.Msg) {
	st.decide(nil)
	if st.ctx.Err() != nil {
		return // reset by the client
	}
	var hdrBuf [8]hpack.HeaderField
	hdr, trl := responseHeaders(&hdrBuf, cluster, resp)
	var parts [4][]byte
	n := 0
	size := 5
	for _, b := range resp.Data {
		if n < len(parts)-1 {
			parts[n] = b.ReadOnlyData()
			size += len(parts[n])
			n++
		}
	}
	if len(resp.Data) > len(parts)-1 {
		parts[0], n = resp.Data.Materialize(), 1
		size = 5 + len(parts[0])
	}
	if len(resp.Tail) > 0 {
		parts[n] = resp.Tail
		size += len(resp.Tail)
		n++
	}
	if d.flow.tryTake(&st.sf, size) {
		d.w.lock()
		d.w.writeHeaders(st.id, false, hdr)
		d.w.writePrefix(st.id, false, size-5)
		for _, p := range parts[:n] {
			if len(p) > 0 {
				d.w.writeData(st.id, false, p)
			}
		}
		d.w.writeHeaders(st.id, true, trl)
		d.w.unlock()
		return
	}
	d.w.lock()
	d.w.writeHeaders(st.id, false, hdr)
	d.w.unlock()
	if err := sendMessage(st.ctx, &d.w, &d.flow, &st.sf, st.id, false, parts[:n]...); err != nil {
		d.resetStream(st.id, http2.ErrCodeInternal)
		return
	}
	d.w.lock()
	d.w.writeHeaders(st.id, true, trl)
	d.w.unlock()
}

// respondNow writes a successful response if the client's windows admit it
// at once, leaving the flush to fl; it reports false (nothing written)
// otherwise.
func (d *dconn) respondNow(st *Call, cluster string, resp *rawmsg.Msg, fl *flushList) bool {
	if st.ctx.Err() != nil {
		st.decide(nil)
		return true // reset by the client: nothing to write
	}
	size := 5 + resp.Len()
	if !d.flow.tryTake(&st.sf, size) {
		return false
	}
	var hdrBuf [8]hpack.HeaderField
	hdr, trl := responseHeaders(&hdrBuf, cluster, resp)
	d.w.lock()
	d.w.writeHeaders(st.id, false, hdr)
	d.w.writePrefix(st.id, false, size-5)
	for _, b := range resp.Data {
		if p := b.ReadOnlyData(); len(p) > 0 {
			d.w.writeData(st.id, false, p)
		}
	}
	if len(resp.Tail) > 0 {
		d.w.writeData(st.id, false, resp.Tail)
	}
	d.w.writeHeaders(st.id, true, trl)
	d.w.unlockDefer(fl)
	st.decide(nil)
	return true
}

var trailersOK = []hpack.HeaderField{hdrGRPCStatus0}

// responseHeaders builds a successful response's headers in buf (status,
// content type, the backend's passable headers, the serving cluster when
// known) and picks its trailers: the backend's, or a bare OK.
func responseHeaders(buf *[8]hpack.HeaderField, cluster string, resp *rawmsg.Msg) (hdr, trl []hpack.HeaderField) {
	hdr = append(buf[:0], hdrStatus200, hdrContentType)
	hdr = appendPassHeaders(hdr, resp.Hdr)
	if cluster != "" {
		hdr = append(hdr, hpack.HeaderField{Name: HeaderCluster, Value: cluster})
	}
	trl = resp.Trl
	if len(trl) == 0 {
		trl = trailersOK
	}
	return hdr, trl
}

// appendPassHeaders adds a backend's response headers that mean something
// to the client (its own metadata), skipping what HTTP/2 and gRPC own.
func appendPassHeaders(dst, src []hpack.HeaderField) []hpack.HeaderField {
	for _, f := range src {
		if Forwardable(f.Name) && f.Name != HeaderCluster {
			dst = append(dst, f)
		}
	}
	return dst
}

// respondErr answers a call that failed. A backend's error goes back with
// its own headers and trailers.
func (d *dconn) respondErr(st *Call, cluster string, err error) {
	st.decide(err)
	if st.ctx.Err() != nil && st.d.ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
		if gstatus.Code(err) == codes.Canceled {
			return // reset by the client
		}
	}
	var be *backendError
	if errors.As(err, &be) && be.trailers != nil {
		trailersOnly := sameFields(be.hdr, be.trailers)
		if cluster == "" && trailersOnly {
			d.w.lock()
			d.w.writeHeaders(st.id, true, []hpack.HeaderField{hdrStatus200, hdrContentType}, passTrailers(be.trailers))
			d.w.unlock()
			return
		}
		// Headers of their own, so that clients see HeaderCluster as a
		// header (in a trailers-only response it would be a trailer).
		hdr := []hpack.HeaderField{hdrStatus200, hdrContentType}
		if !trailersOnly {
			hdr = appendPassHeaders(hdr, be.hdr)
		}
		if cluster != "" {
			hdr = append(hdr, hpack.HeaderField{Name: HeaderCluster, Value: cluster})
		}
		d.w.lock()
		d.w.writeHeaders(st.id, false, hdr)
		d.w.writeHeaders(st.id, true, passTrailers(be.trailers))
		d.w.unlock()
		return
	}
	s := gstatus.Convert(err)
	var extra []hpack.HeaderField
	if p := s.Proto(); len(p.GetDetails()) > 0 {
		if b, err := proto.Marshal(p); err == nil {
			extra = append(extra, hpack.HeaderField{Name: "grpc-status-details-bin", Value: base64.RawStdEncoding.EncodeToString(b)})
		}
	}
	if cluster != "" {
		d.w.lock()
		d.w.writeHeaders(st.id, false, []hpack.HeaderField{hdrStatus200, hdrContentType, {Name: HeaderCluster, Value: cluster}})
		d.w.unlock()
		trl := []hpack.HeaderField{{Name: "grpc-status", Value: itoa(int(s.Code()))}}
		if s.Message() != "" {
			trl = append(trl, hpack.HeaderField{Name: "grpc-message", Value: encodeGRPCMessage(s.Message())})
		}
		d.w.lock()
		d.w.writeHeaders(st.id, true, trl, extra)
		d.w.unlock()
		return
	}
	d.respondHeadersOnly(st.id, s.Code(), s.Message(), extra...)
}

func sameFields(a, b []hpack.HeaderField) bool {
	return len(a) > 0 && len(a) == len(b) && &a[0] == &b[0]
}

// passTrailers drops the pseudo-header and content-type of a trailers-only
// response (we write our own).
func passTrailers(fs []hpack.HeaderField) []hpack.HeaderField {
	out := make([]hpack.HeaderField, 0, len(fs))
	for _, f := range fs {
		if f.Name != ":status" && f.Name != "content-type" && f.Name != HeaderCluster {
			out = append(out, f)
		}
	}
	return out
}

// runStream proxies a streaming method to the leader (Server.proxyStream):
// messages from the client go to the backend as they arrive, messages
// from the backend come back under the client's flow control.
func (d *dconn) runStream(st *Call) {
	defer d.r.active.Done()
	defer d.endStream(st)
	if cluster, started, err := d.r.h.Stream(st, ClientStream{d: d, st: st}); !started {
		d.respondErr(st, cluster, err)
	}
}

// ClientStream is the client's side of a streaming call, for
// Handler.Stream: how its messages arrive and how the answer goes back.
type ClientStream struct {
	d  *dconn
	st *Call
}

// Recv returns the client's next message and the flow-control credit to
// hand back (Sent) once it is sent on; io.EOF when the client half-closed.
func (r ClientStream) Recv(ctx context.Context) (*rawmsg.Msg, int, error) {
	m, err := r.st.in.pop(ctx)
	if err != nil {
		return nil, 0, err
	}
	n := m.Len() + 5
	m, err = r.st.decompress(m)
	return m, n, err
}

// Sent hands back the credit of a message sent on.
func (r ClientStream) Sent(credit int) { r.d.returnCredit(r.st.id, credit) }

// SendHeader sends the backend's header, plus HeaderCluster.
func (r ClientStream) SendHeader(hdr metadata.MD, cluster string) error {
	headers := append(mdFields([]hpack.HeaderField{hdrStatus200, hdrContentType}, hdr), hpack.HeaderField{Name: HeaderCluster, Value: cluster})
	r.d.w.lock()
	r.d.w.writeHeaders(r.st.id, false, headers)
	r.d.w.unlock()
	return nil
}

// Send sends one message to the client, under its flow control; on
// failure the stream is reset.
func (r ClientStream) Send(m *rawmsg.Msg) error {
	err := sendMessage(r.st.ctx, &r.d.w, &r.d.flow, &r.st.sf, r.st.id, false, m.Bytes())
	if err != nil {
		r.d.resetStream(r.st.id, http2.ErrCodeCancel)
	}
	return err
}

// Finish ends the stream with outcome (nil: OK) and the backend's
// trailer, plus HeaderCluster.
func (r ClientStream) Finish(outcome error, trailer metadata.MD, cluster string) {
	s := gstatus.Convert(outcome)
	r.st.decide(s.Err())
	trl := []hpack.HeaderField{{Name: "grpc-status", Value: itoa(int(s.Code()))}}
	if s.Message() != "" {
		trl = append(trl, hpack.HeaderField{Name: "grpc-message", Value: encodeGRPCMessage(s.Message())})
	}
	trl = append(mdFields(trl, trailer), hpack.HeaderField{Name: HeaderCluster, Value: cluster})
	r.d.w.lock()
	r.d.w.writeHeaders(r.st.id, true, trl)
	r.d.w.unlock()
}

// fieldsMD turns forwarded header fields into gRPC metadata.
func fieldsMD(fs []hpack.HeaderField) metadata.MD {
	md := make(metadata.MD, len(fs))
	for _, f := range fs {
		if f.Name == "user-agent" {
			continue
		}
		v := f.Value
		if strings.HasSuffix(f.Name, "-bin") {
			if b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(v, "=")); err == nil {
				v = string(b)
			}
		}
		md[f.Name] = append(md[f.Name], v)
	}
	return md
}

// mdFields appends gRPC metadata as header fields, skipping reserved keys.
func mdFields(dst []hpack.HeaderField, md metadata.MD) []hpack.HeaderField {
	for k, vs := range md {
		if !Forwardable(k) || k == HeaderCluster {
			continue
		}
		for _, v := range vs {
			if strings.HasSuffix(k, "-bin") {
				v = base64.RawStdEncoding.EncodeToString([]byte(v))
			}
			dst = append(dst, hpack.HeaderField{Name: k, Value: v})
		}
	}
	return dst
}

// msgAssembler cuts a stream's DATA into gRPC messages (5-byte prefix:
// compressed flag, big-endian length), each in one pooled buffer.
type msgAssembler struct {
	prefix  [5]byte
	nprefix int
	cur     *rawmsg.Msg
	body    []byte
	want    int
	done    []*rawmsg.Msg
	// one backs done for the usual single message, so that a unary
	// call's request costs no slice allocation; whoever takes messages
	// from done copies them out before done is reused.
	one [1]*rawmsg.Msg
}

func (a *msgAssembler) partial() bool { return a.nprefix > 0 || a.cur != nil }

// append consumes p and returns the messages it completed.
func (a *msgAssembler) append(p []byte, maxMsg int) ([]*rawmsg.Msg, error) {
	if a.done == nil {
		a.done = a.one[:0]
	}
	first := len(a.done)
	for len(p) > 0 || (a.cur != nil && len(a.body) == a.want) {
		if a.cur == nil {
			k := copy(a.prefix[a.nprefix:], p)
			a.nprefix += k
			p = p[k:]
			if a.nprefix < 5 {
				break
			}
			if a.prefix[0] > 1 {
				// gRPC over HTTP/2: the flag is 0 or 1 (grpc-go:
				// "unexpected payload format").
				return nil, gstatus.Errorf(codes.Internal, "milvus-ha-proxy: message with compressed flag %d", a.prefix[0])
			}
			size := int(binary.BigEndian.Uint32(a.prefix[1:]))
			if size > maxMsg {
				return nil, gstatus.Errorf(codes.ResourceExhausted, "milvus-ha-proxy: message of %d bytes exceeds the limit of %d", size, maxMsg)
			}
			// The buffer holds what arrived, not what the prefix
			// claims: up to assemblerChunk at first, then it grows
			// with the bytes (a client that claims 255 MiB and sends
			// 1 KiB costs 64 KiB, not 255 MiB).
			a.cur = &rawmsg.Msg{Compressed: a.prefix[0] == 1}
			if first := min(size, max(len(p), assemblerChunk)); first <= assemblerChunk {
				buf := mem.DefaultBufferPool().Get(first)
				a.body, a.cur.Pooled = (*buf)[:0], buf
			} else {
				a.body = make([]byte, 0, first)
			}
			a.want = size
			a.nprefix = 0
		}
		k := min(a.want-len(a.body), len(p))
		if len(a.body)+k > cap(a.body) {
			a.grow(k)
		}
		a.body = append(a.body, p[:k]...)
		p = p[k:]
		if len(a.body) == a.want {
			if a.cur.Pooled != nil {
				*a.cur.Pooled = a.body
				a.cur.Data = mem.BufferSlice{mem.NewBuffer(a.cur.Pooled, mem.DefaultBufferPool())}
			} else {
				a.cur.Data = mem.BufferSlice{mem.SliceBuffer(a.body)}
			}
			a.done = append(a.done, a.cur)
			a.cur, a.body = nil, nil
		}
	}
	return a.done[first:], nil
}

// assemblerChunk is the first buffer of a message whose bytes have not
// arrived yet (a size the buffer pool keeps).
const assemblerChunk = 32 << 10

// grow makes room for k more bytes of the current message: at least
// double, never past the claimed length. The pool's sizes jump from 32 KiB
// to 1 MiB, so a grown buffer is allocated, not pooled.
func (a *msgAssembler) grow(k int) {
	n := min(a.want, max(2*cap(a.body), len(a.body)+k))
	nb := append(make([]byte, 0, n), a.body...)
	if a.cur.Pooled != nil {
		*a.cur.Pooled = a.body
		mem.DefaultBufferPool().Put(a.cur.Pooled)
		a.cur.Pooled = nil
	}
	a.body = nb
}

// msgQueue hands a streaming call's messages from the connection's reader
// to the goroutine sending them on.
type msgQueue struct {
	mu   sync.Mutex
	cond sync.Cond
	q    []*rawmsg.Msg
	err  error
}

func newMsgQueue() *msgQueue {
	q := &msgQueue{}
	q.cond.L = &q.mu
	return q
}

func (q *msgQueue) push(m *rawmsg.Msg) {
	q.mu.Lock()
	q.q = append(q.q, m)
	q.cond.Broadcast()
	q.mu.Unlock()
}

func (q *msgQueue) close(err error) {
	q.mu.Lock()
	if q.err == nil {
		q.err = err
	}
	q.cond.Broadcast()
	q.mu.Unlock()
}

func (q *msgQueue) pop(ctx context.Context) (*rawmsg.Msg, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { q.close(ctx.Err()) })
	defer stop()
	for len(q.q) == 0 && q.err == nil {
		q.cond.Wait()
	}
	if len(q.q) > 0 {
		m := q.q[0]
		q.q = q.q[1:]
		return m, nil
	}
	return nil, q.err
}

// healthCheck answers grpc.health.v1.Health/Check.
func (d *dconn) healthCheck(st *Call, req *rawmsg.Msg) {
	var in healthpb.HealthCheckRequest
	if err := proto.Unmarshal(req.Bytes(), &in); err != nil {
		d.respondErr(st, "", gstatus.Errorf(codes.Internal, "milvus-ha-proxy: decoding HealthCheckRequest: %v", err))
		return
	}
	if in.GetService() != "" && in.GetService() != d.r.service {
		d.respondErr(st, "", gstatus.Error(codes.NotFound, "unknown service"))
		return
	}
	status, _ := d.r.h.Health()
	b, _ := proto.Marshal(&healthpb.HealthCheckResponse{Status: status})
	d.respond(st, "", rawmsg.FromBytes(b))
}

// healthWatch answers grpc.health.v1.Health/Watch: the status now and at
// every change, until the client leaves or the proxy drains.
func (d *dconn) healthWatch(st *Call, req *rawmsg.Msg) {
	var in healthpb.HealthCheckRequest
	if err := proto.Unmarshal(req.Bytes(), &in); err != nil {
		d.respondErr(st, "", gstatus.Errorf(codes.Internal, "milvus-ha-proxy: decoding HealthCheckRequest: %v", err))
		return
	}
	known := in.GetService() == "" || in.GetService() == d.r.service
	d.w.lock()
	d.w.writeHeaders(st.id, false, []hpack.HeaderField{hdrStatus200, hdrContentType})
	d.w.unlock()
	last := healthpb.HealthCheckResponse_ServingStatus(-1)
	for {
		status, changed := d.r.h.Health()
		if !known {
			status = healthpb.HealthCheckResponse_SERVICE_UNKNOWN
		}
		if status != last {
			b, _ := proto.Marshal(&healthpb.HealthCheckResponse{Status: status})
			if err := sendMessage(st.ctx, &d.w, &d.flow, &st.sf, st.id, false, b); err != nil {
				return
			}
			last = status
		}
		if d.r.h.Draining() {
			break
		}
		select {
		case <-changed:
		case <-st.ctx.Done():
			return
		}
	}
	st.decide(nil)
	d.w.lock()
	d.w.writeHeaders(st.id, true, []hpack.HeaderField{hdrGRPCStatus0})
	d.w.unlock()
}

// Event is what an Observer is told.
type Event string

// Relay events.
const (
	// EventRefused: a request or stream refused at the edge (reasons:
	// malformed, not_grpc, streams, header_list, header_block,
	// message_size, cardinality).
	EventRefused Event = "refused"
	// EventConnClosed: a client connection the relay closed (reasons:
	// protocol_error, abuse, too_many_pings, idle, write_timeout,
	// output_overflow; penalty: a new connection refused at once, its address
	// having been closed for abuse a moment ago, see PeerPenalty).
	EventConnClosed Event = "closed"
	// EventStreamHeld and EventStreamResumed: a backend stream whose
	// flow-control window the relay withholds because its client
	// connection (or the process) is over its response budget, and one
	// that is given window again or ended.
	EventStreamHeld    Event = "held"
	EventStreamResumed Event = "resumed"
)

// Observer is told about the relay's refusals, the client connections
// it closes and the backend streams it holds back.
type Observer interface {
	RelayEvent(ev Event, reason string)
}

func (r *Server) event(ev Event, reason string) {
	if r.obs != nil {
		r.obs.RelayEvent(ev, reason)
	}
}
