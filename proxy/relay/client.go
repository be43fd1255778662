package relay

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/proxy/rawmsg"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	gstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Pool keeps raw HTTP/2 connections to the clusters and sends
// unary calls over them as frames.
type Pool struct {
	dialFn func(ctx context.Context, c *topology.Cluster) (net.Conn, error)
	creds  func(c *topology.Cluster) credentials.TransportCredentials
	maxMsg int
	ka     keepalive.ClientParameters
	log    *slog.Logger
	mu     sync.Mutex
	pools  map[string]*upool // by cluster id
	// kaTime is a cluster's keepalive interval once it answered GOAWAY
	// too_many_pings (doubled each time); absent: ka.Time.
	kaTime map[string]time.Duration
	closed bool

	// streamWindow is the initial stream window granted to clusters
	// (how far one answer runs ahead of the response budget), and
	// streamUpdate how much of it is consumed before it is returned.
	streamWindow, streamUpdate int
	acks                       ackFlusher // the connections' PING acknowledgements
}

// upool is the connections to one cluster.
type upool struct {
	uri     string
	conns   []*uconn
	dialing chan struct{} // closed when the dial under way ends
	dialErr error
}

const maxConnsPerCluster = 8

// PoolOptions configure a Pool.
type PoolOptions struct {
	// Dial opens a connection to a cluster; nil: TCP to the URI's
	// address.
	Dial func(ctx context.Context, c *topology.Cluster) (net.Conn, error)
	// Creds returns a cluster's TLS credentials (nil: plaintext).
	Creds func(c *topology.Cluster) credentials.TransportCredentials
	// MaxMessageSize bounds a response message.
	MaxMessageSize int
	// Keepalive pings a connection when it was quiet for Time and closes
	// it when nothing arrives within Timeout after. Zero Time:
	// DefaultKeepalive; zero Timeout: DefaultKeepalive's.
	Keepalive keepalive.ClientParameters
	Logger    *slog.Logger
	// StreamWindow is the initial stream window granted to clusters
	// (SETTINGS_INITIAL_WINDOW_SIZE): how far one answer runs ahead of
	// the response budget (Limits.BackendStreamWindow). 0: its default.
	StreamWindow int
}

// DefaultKeepalive is a Pool's keepalive unless PoolOptions say
// otherwise; Milvus permits pings every 5 s, with or without calls.
var DefaultKeepalive = keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}

// NewPool returns a Pool; it dials on first use. Close closes it.
func NewPool(o PoolOptions) *Pool {
	if o.Keepalive.Time <= 0 {
		o.Keepalive = DefaultKeepalive
	}
	if o.Keepalive.Timeout <= 0 {
		o.Keepalive.Timeout = DefaultKeepalive.Timeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	win := min(max(o.StreamWindow, http2DefaultWindow), maxWindow)
	if o.StreamWindow <= 0 {
		win = DefaultLimits.BackendStreamWindow
	}
	return &Pool{dialFn: o.Dial, creds: o.Creds, maxMsg: o.MaxMessageSize,
		ka: o.Keepalive, log: o.Logger, pools: map[string]*upool{}, kaTime: map[string]time.Duration{},
		streamWindow: win, streamUpdate: max(win/4, 1)}
}

// conn returns a connection to cl with room for one more stream, dialing
// one if needed.
func (r *Pool) conn(ctx context.Context, cl *topology.Cluster) (*uconn, error) {
	for {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return nil, errConnClosed
		}
		p := r.pools[cl.ID]
		if p == nil || p.uri != cl.URI {
			if p != nil {
				for _, u := range p.conns {
					u.retire()
				}
			}
			p = &upool{uri: cl.URI}
			r.pools[cl.ID] = p
		}
		live := p.conns[:0]
		var pick *uconn
		for _, u := range p.conns {
			if u.dead() {
				continue
			}
			live = append(live, u)
			if pick == nil && u.hasRoom() {
				pick = u
			}
		}
		p.conns = live
		if pick != nil {
			r.mu.Unlock()
			return pick, nil
		}
		if len(p.conns) >= maxConnsPerCluster && len(p.conns) > 0 {
			pick = p.conns[0] // the server will refuse; the caller may retry
			r.mu.Unlock()
			return pick, nil
		}
		if p.dialing != nil {
			wait := p.dialing
			r.mu.Unlock()
			select {
			case <-wait:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			r.mu.Lock()
			err := p.dialErr
			r.mu.Unlock()
			if err != nil {
				return nil, err
			}
			continue
		}
		done := make(chan struct{})
		p.dialing = done
		r.mu.Unlock()

		u, err := r.dial(ctx, cl)
		r.mu.Lock()
		p.dialing, p.dialErr = nil, err
		if err == nil {
			if r.closed {
				u.retire()
				err = errConnClosed
			} else {
				p.conns = append(p.conns, u)
			}
		}
		close(done)
		r.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return u, nil
	}
}

// connNow returns a live connection to cl with room for a stream, or nil
// when getting one would mean dialing.
func (r *Pool) connNow(cl *topology.Cluster) *uconn {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pools[cl.ID]
	if p == nil || p.uri != cl.URI {
		return nil
	}
	for _, u := range p.conns {
		if !u.dead() && u.hasRoom() {
			return u
		}
	}
	return nil
}

// splitURI turns a cluster URI (host:port, or with an http, https, grpc
// or tcp scheme) into an address and whether TLS is implied.
func splitURI(uri string) (addr string, tls bool) {
	for _, p := range []string{"https://", "grpcs://"} {
		if strings.HasPrefix(uri, p) {
			return strings.TrimSuffix(strings.TrimPrefix(uri, p), "/"), true
		}
	}
	for _, p := range []string{"http://", "grpc://", "tcp://"} {
		uri = strings.TrimPrefix(uri, p)
	}
	return strings.TrimSuffix(uri, "/"), false
}

func (r *Pool) dial(ctx context.Context, cl *topology.Cluster) (*uconn, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	addr, useTLS := splitURI(cl.URI)
	var nc net.Conn
	var err error
	if r.dialFn != nil {
		nc, err = r.dialFn(ctx, cl)
	} else {
		nc, err = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("dialing cluster %s at %s: %w", cl.ID, addr, err)
	}
	scheme := "http"
	var creds credentials.TransportCredentials
	if r.creds != nil {
		creds = r.creds(cl)
	}
	authority := addr
	if creds != nil {
		// As grpc-go does: a server name set on the credentials is the
		// authority, else the address.
		if sn := creds.Info().ServerName; sn != "" {
			authority = sn
		}
		nc, _, err = creds.ClientHandshake(ctx, authority, nc)
		if err != nil {
			return nil, fmt.Errorf("TLS handshake with cluster %s at %s: %w", cl.ID, addr, err)
		}
		scheme = "https"
	} else if useTLS {
		nc.Close()
		return nil, fmt.Errorf("cluster %s: %s needs TLS but no backend credentials are configured", cl.ID, cl.URI)
	}
	u := newUconn(r, cl.ID, authority, scheme, nc)
	if err := u.start(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("HTTP/2 handshake with cluster %s at %s: %w", cl.ID, addr, err)
	}
	return u, nil
}

// Close fails every connection and every call on them; the Pool dials no
// more.
func (r *Pool) Close() {
	r.mu.Lock()
	r.closed = true
	pools := r.pools
	r.pools = map[string]*upool{}
	r.mu.Unlock()
	for _, p := range pools {
		for _, u := range p.conns {
			u.fail(errConnClosed, nil)
		}
	}
}

// uconn is one HTTP/2 connection to a cluster.
type uconn struct {
	r         *Pool
	cluster   string
	authority string
	scheme    string
	nc        net.Conn
	br        *bufio.Reader
	fr        *http2.Framer
	w         h2writer
	flow      flow
	fl        flushList // the reader goroutine's deferred flushes
	hr        *headerReader
	// activity is set by the reader on every frame; the keepalive
	// goroutine clears it and pings when it stayed clear for a period.
	activity atomic.Bool
	done     chan struct{} // closed by fail

	mu            sync.Mutex
	streams       map[uint32]*ustream
	nextID        uint32
	maxConcurrent uint32
	goingAway     bool
	goAwayLast    uint32
	closed        bool
	closeErr      error
	recvConn      int // DATA received and not yet returned as window
	fixed         [6]hpack.HeaderField
}

func newUconn(r *Pool, cluster, authority, scheme string, nc net.Conn) *uconn {
	u := &uconn{r: r, cluster: cluster, authority: authority, scheme: scheme, nc: nc,
		streams: map[uint32]*ustream{}, nextID: 1, maxConcurrent: 1<<32 - 1, done: make(chan struct{})}
	var rd io.Reader
	var wr io.Writer
	if rs := newRawSocket(nc); rs != nil {
		rd, wr = rs, rs
	} else {
		rd, wr = nc, nc
	}
	bw := bufio.NewWriterSize(wr, 32<<10)
	u.br = bufio.NewReaderSize(rd, 32<<10)
	u.fr = http2.NewFramer(bw, u.br)
	u.fr.SetMaxReadFrameSize(MaxFrameSize)
	u.fr.SetReuseFrames()            // DATA is copied out (appendData) before the next read
	u.hr = newHeaderReader(16 << 20) // grpc-go's default limit: the cluster is trusted
	u.hr.shared = true               // onHeaders and the response only read the fields
	u.w.init(bw, u.fr)
	u.w.acks = &r.acks
	u.flow.init()
	u.fixed = [6]hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: scheme}, {Name: ":path"},
		{Name: ":authority", Value: authority}, {Name: "content-type", Value: "application/grpc"},
		{Name: "te", Value: "trailers"},
	}
	return u
}

func (u *uconn) start() error {
	u.w.lock()
	_, _ = io.WriteString(u.w.bw, http2.ClientPreface)
	u.w.writeSettings(uint32(u.r.streamWindow), http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	err := u.w.err
	u.w.unlock()
	if err != nil {
		return err
	}
	go u.readLoop()
	go u.keepalive()
	return nil
}

// keepalivePing is the payload of our keepalive PINGs.
var keepalivePing = [8]byte{'m', 'h', 'p', 'k', 'a', 'l', 'v', 'e'}

// keepalive pings the cluster after a keepalive period in which nothing
// was read (so between one and two periods of silence), and fails the
// connection, with every call on it, when nothing at all is read within
// the timeout after the ping: any frame proves the peer alive, as in
// grpc-go.
func (u *uconn) keepalive() {
	t := time.NewTimer(u.r.KeepaliveTime(u.cluster))
	defer t.Stop()
	for {
		select {
		case <-u.done:
			return
		case <-t.C:
		}
		if u.activity.Swap(false) {
			t.Reset(u.r.KeepaliveTime(u.cluster))
			continue
		}
		if !u.r.ka.PermitWithoutStream {
			u.mu.Lock()
			idle := len(u.streams) == 0
			u.mu.Unlock()
			if idle {
				t.Reset(u.r.KeepaliveTime(u.cluster))
				continue
			}
		}
		u.w.lock()
		if u.w.err == nil {
			u.w.err = u.fr.WritePing(false, keepalivePing)
		}
		u.w.unlock()
		// Wait for any frame up to the timeout, looking every period
		// (as grpc-go), so that a quick answer puts us back on the
		// period rather than after the whole timeout.
		period := u.r.KeepaliveTime(u.cluster)
		alive := false
		for left := u.r.ka.Timeout; left > 0 && !alive; left -= period {
			t.Reset(min(period, left))
			select {
			case <-u.done:
				return
			case <-t.C:
			}
			alive = u.activity.Swap(false)
		}
		if !alive {
			u.fail(fmt.Errorf("no answer from cluster %s to a keepalive ping within %v", u.cluster, u.r.ka.Timeout), nil)
			return
		}
		t.Reset(period)
	}
}

// KeepaliveTime is the keepalive period for a cluster's connections: the
// configured one, doubled each time the cluster answered GOAWAY
// too_many_pings.
func (r *Pool) KeepaliveTime(cluster string) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if d, ok := r.kaTime[cluster]; ok {
		return d
	}
	return r.ka.Time
}

// tooManyPings halves the keepalive pings to a cluster that complained,
// as grpc-go's client does.
func (r *Pool) tooManyPings(cluster string) {
	r.mu.Lock()
	d, ok := r.kaTime[cluster]
	if !ok {
		d = r.ka.Time
	}
	if d < math.MaxInt64/2 {
		d *= 2
	}
	r.kaTime[cluster] = d
	r.mu.Unlock()
	r.log.Warn("proxy: cluster answered GOAWAY too_many_pings; pinging less often", "cluster", cluster, "keepalive_time", d)
}

func (u *uconn) dead() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.closed || u.goingAway
}

func (u *uconn) hasRoom() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return uint32(len(u.streams)) < u.maxConcurrent && u.nextID < 1<<31-1
}

// retire stops new streams on u and closes it once the last one ends.
func (u *uconn) retire() {
	u.mu.Lock()
	u.goingAway = true
	idle := len(u.streams) == 0
	u.mu.Unlock()
	if idle {
		go u.fail(errConnClosed, nil) // not under the caller's locks
	}
}

func (us *ustream) sendFlow() *streamFlow { return &us.sf }

// ustream is one call in flight on a uconn.
type ustream struct {
	id   uint32
	u    *uconn
	sf   streamFlow
	done chan struct{}
	// xch, when set, is the Exchange the stream carries: its onDone
	// replaces done, run where the stream ends (on the reader goroutine,
	// normally) with that goroutine's flush list. (A pointer, not a
	// method value: that would be an allocation per call.)
	xch *Exchange

	// rmu makes the reader's work on the response (appendData, the
	// budget charge) and the stream's end exclusive: a stream may be
	// ended by another goroutine (a client's reset or close aborts it,
	// the keepalive fails the connection) while the reader, which found
	// it in streams a moment before, is appending to its body; whoever
	// ends it then frees the body (result). ended (under rmu) is set
	// when the stream is ended; the reader leaves an ended stream alone.
	rmu   sync.Mutex
	ended bool

	// Filled by the reader goroutine before done is closed.
	gotHeaders bool
	hdr        []hpack.HeaderField
	trailers   []hpack.HeaderField
	prefix     [5]byte
	nprefix    int
	body       []byte // the response message, once its length is known
	small      []byte // a small body's buffer (bodyBuf points here; poolDrops)
	bodyBuf    *[]byte
	want       int // its length
	err        error
	refused    bool // never processed by the server: safe to resend

	// unreturned is stream DATA received and not yet returned as window
	// (the reader adds; whoever returns it, the reader or a resume of
	// the response budget, takes it all).
	unreturned atomic.Int64
	// acct, when set, is the client call the answer is charged to; the
	// rest is guarded by acct.b.mu.
	acct       *respAcct
	registered bool  // one of the connection budget's receiving streams
	held       bool  // its window is withheld
	partial    int64 // bytes charged while receiving
}

var errRefused = errors.New("refused by the server before processing")

// refusedError is a call a cluster refused before processing it.
type refusedError struct{ cluster string }

func (e *refusedError) Error() string {
	return "milvus-ha-proxy: cluster " + e.cluster + " " + errRefused.Error()
}
func (e *refusedError) Unwrap() error { return errRefused }
func (e *refusedError) GRPCStatus() *gstatus.Status {
	return gstatus.New(codes.Unavailable, e.Error())
}

// Request is what a unary call sends a cluster besides its message.
type Request struct {
	Ctx     context.Context     // the call's cancellation and deadline (sent as grpc-timeout)
	Path    string              // the method's :path
	Forward []hpack.HeaderField // the client's metadata that goes on
	// acct, from Call.Request, charges the answer to the client call's
	// response budget.
	acct *respAcct
}

// RoundTrip sends req to cl and waits for the answer: the response, or
// the error and whether the request may have been processed (sent). A
// stream the cluster refused before processing it (REFUSED_STREAM, or
// past a GOAWAY's last stream id) is sent again on a fresh stream, once,
// as grpc-go's transparent retry does.
func (r *Pool) RoundTrip(c Request, cl *topology.Cluster, req *rawmsg.Msg) (resp *rawmsg.Msg, sent bool, err error) {
	resp, sent, err, refused := r.roundTripOnce(&c, cl, req)
	if refused && c.Ctx.Err() == nil {
		resp, sent, err, _ = r.roundTripOnce(&c, cl, req)
	}
	return resp, sent, err
}

func (r *Pool) roundTripOnce(c *Request, cl *topology.Cluster, req *rawmsg.Msg) (_ *rawmsg.Msg, sent bool, _ error, refused bool) {
	resp, sent, err := r.roundTripStream(c, cl, req)
	return resp, sent, err, !sent && err != nil && errors.Is(err, errRefused)
}

func (r *Pool) roundTripStream(c *Request, cl *topology.Cluster, req *rawmsg.Msg) (*rawmsg.Msg, bool, error) {
	u, err := r.conn(c.Ctx, cl)
	if err != nil {
		if c.Ctx.Err() != nil {
			return nil, false, gstatus.FromContextError(c.Ctx.Err()).Err()
		}
		return nil, false, gstatus.Errorf(codes.Unavailable, "milvus-ha-proxy: %v", err)
	}
	us := &ustream{done: make(chan struct{})}
	written, err := u.send(c, us, req)
	if err != nil && !written {
		return nil, false, gstatus.Errorf(codes.Unavailable, "milvus-ha-proxy: sending to cluster %s: %v", cl.ID, err)
	}
	if err != nil {
		if u.abort(us.id, http2.ErrCodeCancel, err) {
			return nil, true, gstatus.Errorf(codes.Unavailable, "milvus-ha-proxy: sending to cluster %s: %v", cl.ID, err)
		}
		<-us.done // the reader finished it first: take its outcome
	} else {
		select {
		case <-us.done:
		case <-c.Ctx.Done():
			if u.abort(us.id, http2.ErrCodeCancel, errStreamReset) {
				return nil, true, gstatus.FromContextError(c.Ctx.Err()).Err()
			}
			<-us.done
		}
	}
	return us.result(cl.ID)
}

// result is a finished stream's outcome: the response, or the error and
// whether the request may have been processed.
func (us *ustream) result(cluster string) (*rawmsg.Msg, bool, error) {
	if us.refused {
		return nil, false, &refusedError{cluster: cluster}
	}
	if us.err != nil {
		us.freeBody()
		return nil, true, us.err
	}
	if err := us.statusErr(cluster); err != nil {
		us.freeBody()
		return nil, true, err
	}
	resp := &rawmsg.Msg{Give: true, Hdr: us.hdr, Trl: us.trailers}
	*us.bodyBuf = us.body
	resp.Data = mem.BufferSlice{mem.NewBuffer(us.bodyBuf, mem.DefaultBufferPool())}
	us.bodyBuf, us.body = nil, nil
	return resp, true, nil
}

var errWouldBlock = errors.New("milvus-ha-proxy: would block")

// send opens the stream and writes the request, waiting for flow-control
// credit if it must. written reports whether any frame of it was handed to
// the connection.
func (u *uconn) send(c *Request, us *ustream, req *rawmsg.Msg) (written bool, err error) {
	return u.open(c, us, req, nil)
}

// open opens the stream and writes the request. With fl set it never
// waits: a request the windows do not admit at once is not sent
// (errWouldBlock, nothing written), and the flush is left to fl.
func (u *uconn) open(c *Request, us *ustream, req *rawmsg.Msg, fl *flushList) (written bool, err error) {
	var parts [5][]byte
	n := 0
	for _, b := range req.Data {
		if n < len(parts)-1 {
			parts[n] = b.ReadOnlyData()
			n++
		}
	}
	if len(req.Data) > len(parts)-1 {
		parts[0], n = req.Data.Materialize(), 1
	}
	if len(req.Tail) > 0 {
		parts[n] = req.Tail
		n++
	}
	size := 5
	for _, p := range parts[:n] {
		size += len(p)
	}

	u.w.lock()
	u.mu.Lock()
	if u.closed || u.goingAway || u.nextID >= 1<<31-1 {
		err := u.closeErr
		u.mu.Unlock()
		u.w.unlock()
		if err == nil {
			err = errConnClosed
		}
		return false, err
	}
	us.id = u.nextID
	us.u = u
	u.nextID += 2
	u.streams[us.id] = us
	u.flow.mu.Lock()
	us.sf.win = u.flow.initial
	fits := !u.flow.closed && u.flow.conn >= int64(size) && us.sf.win >= int64(size)
	if fits {
		u.flow.conn -= int64(size)
		us.sf.win -= int64(size)
	}
	u.flow.mu.Unlock()
	if !fits && fl != nil {
		// Skipping a stream id is allowed: it is implicitly closed.
		delete(u.streams, us.id)
		u.mu.Unlock()
		u.w.unlock()
		return false, errWouldBlock
	}
	if c.acct != nil && c.acct.b != nil {
		// Before the HEADERS: its DATA is charged from the first frame.
		c.acct.register(us)
	}
	u.mu.Unlock()

	if dl, ok := c.Ctx.Deadline(); ok {
		u.w.timeout, u.w.sendTimeout = time.Until(dl), true // grpc-timeout
	}
	fixed := u.fixed
	fixed[2].Value = c.Path
	u.w.writeHeaders(us.id, false, fixed[:], c.Forward)
	if u.w.err != nil {
		err := u.w.err
		u.w.unlock()
		return true, err
	}
	// Most requests fit the windows: their DATA leaves with the HEADERS.
	if fits {
		rest := size - 5
		u.w.writePrefix(us.id, rest == 0, rest)
		for _, p := range parts[:n] {
			if len(p) > 0 {
				rest -= len(p)
				u.w.writeData(us.id, rest == 0, p)
			}
		}
		err := u.w.err
		u.w.unlockDefer(fl)
		return true, err
	}
	u.w.unlock()
	return true, sendMessage(c.Ctx, &u.w, &u.flow, &us.sf, us.id, true, parts[:n]...)
}

// abort ends stream id with err and resets it on the wire. It reports
// whether it ended the stream (false: it had ended already, and its
// outcome stands). Whoever ends a stream writes its outcome; a stream
// ended by abort must not be read further.
func (u *uconn) abort(id uint32, code http2.ErrCode, err error) bool {
	if !u.finish(id, func(us *ustream) { us.err = err }) {
		return false
	}
	u.w.writeRSTStream(id, code)
	return true
}

// finish removes stream id and wakes its waiter. It reports whether the
// stream was still open.
func (u *uconn) finish(id uint32, set func(*ustream)) bool {
	return u.finishFL(id, set, nil)
}

// finishFL is finish on a goroutine with a flush list.
func (u *uconn) finishFL(id uint32, set func(*ustream), fl *flushList) bool {
	u.mu.Lock()
	us := u.streams[id]
	if us == nil {
		u.mu.Unlock()
		return false
	}
	delete(u.streams, id)
	idle := u.goingAway && len(u.streams) == 0
	u.mu.Unlock()
	us.end()
	if set != nil {
		set(us)
	}
	us.unregister()
	u.flow.resetStream(&us.sf)
	us.complete(fl)
	if idle {
		u.fail(errConnClosed, fl)
	}
	return true
}

// end marks the stream ended, once the reader is out of its response
// (see rmu); called by whoever removed it from the connection's streams.
func (us *ustream) end() {
	us.rmu.Lock()
	us.ended = true
	us.rmu.Unlock()
}

func (us *ustream) complete(fl *flushList) {
	if us.xch != nil {
		us.xch.onDone(fl)
		return
	}
	close(us.done)
}

// fail closes the connection and fails every stream on it.
func (u *uconn) fail(err error, fl *flushList) {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return
	}
	u.closed = true
	u.closeErr = err
	streams := u.streams
	u.streams = map[uint32]*ustream{}
	u.mu.Unlock()
	close(u.done)
	u.flow.close()
	_ = u.nc.Close()
	for _, us := range streams {
		us.end()
		us.err = gstatus.Errorf(codes.Unavailable, "milvus-ha-proxy: connection to cluster %s lost: %v", u.cluster, err)
		us.unregister()
		us.complete(fl)
	}
}

func (u *uconn) readLoop() {
	for {
		if u.br.Buffered() == 0 {
			u.fl.flush() // everything this read produced, in one write each
		}
		f, err := u.fr.ReadFrame()
		if err != nil {
			u.fl.flush()
			u.fail(err, nil)
			return
		}
		if !u.activity.Load() {
			u.activity.Store(true)
		}
		switch f := f.(type) {
		case *http2.HeadersFrame, *http2.ContinuationFrame:
			fields, complete, err := u.hr.read(f)
			if err != nil {
				u.fl.flush()
				u.fail(err, nil)
				return
			}
			if complete {
				u.onHeaders(u.hr.streamID, u.hr.endStream, fields)
			}
		case *http2.DataFrame:
			u.onData(f)
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			u.onSettings(f)
		case *http2.PingFrame:
			if !f.IsAck() {
				u.w.writePingAckLazy(f.Data)
			}
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				if !u.flow.addConn(int64(f.Increment)) {
					u.fl.flush()
					u.fail(fmt.Errorf("cluster %s: connection window over 2^31-1", u.cluster), nil)
					return
				}
			} else {
				u.mu.Lock()
				us := u.streams[f.StreamID]
				u.mu.Unlock()
				if us != nil && !u.flow.addStream(&us.sf, int64(f.Increment)) {
					u.abort(f.StreamID, http2.ErrCodeFlowControl, gstatus.Errorf(codes.Internal, "milvus-ha-proxy: cluster %s: stream window over 2^31-1", u.cluster))
				}
			}
		case *http2.RSTStreamFrame:
			u.finishFL(f.StreamID, func(us *ustream) {
				if f.ErrCode == http2.ErrCodeRefusedStream {
					us.refused = true
					return
				}
				us.err = gstatus.Errorf(rstCode(f.ErrCode), "milvus-ha-proxy: cluster %s reset the stream: %v", u.cluster, f.ErrCode)
			}, &u.fl)
		case *http2.GoAwayFrame:
			u.onGoAway(f)
		}
	}
}

func rstCode(c http2.ErrCode) codes.Code {
	switch c {
	case http2.ErrCodeCancel:
		return codes.Canceled
	case http2.ErrCodeEnhanceYourCalm:
		return codes.ResourceExhausted
	case http2.ErrCodeInadequateSecurity:
		return codes.PermissionDenied
	case http2.ErrCodeRefusedStream:
		return codes.Unavailable
	}
	return codes.Internal
}

func (u *uconn) onSettings(f *http2.SettingsFrame) {
	if err := f.ForeachSetting(func(s http2.Setting) error { return s.Valid() }); err != nil {
		u.fail(fmt.Errorf("cluster %s sent invalid SETTINGS: %w", u.cluster, err), nil)
		return
	}
	if !applySettings(f, &u.w, &u.flow, &u.mu, &u.streams, &u.maxConcurrent) {
		u.fail(fmt.Errorf("cluster %s sent an initial window over 2^31-1", u.cluster), nil)
	}
}

func (u *uconn) onGoAway(f *http2.GoAwayFrame) {
	if f.ErrCode == http2.ErrCodeEnhanceYourCalm && string(f.DebugData()) == "too_many_pings" {
		u.r.tooManyPings(u.cluster)
	}
	u.mu.Lock()
	u.goingAway = true
	u.goAwayLast = f.LastStreamID
	var refused []uint32
	for id := range u.streams {
		if id > f.LastStreamID {
			refused = append(refused, id)
		}
	}
	idle := len(u.streams) == len(refused)
	u.mu.Unlock()
	for _, id := range refused {
		u.finishFL(id, func(us *ustream) { us.refused = true }, &u.fl)
	}
	if idle {
		u.fail(fmt.Errorf("cluster %s sent GOAWAY (%v)", u.cluster, f.ErrCode), &u.fl)
	}
}

func (u *uconn) onHeaders(id uint32, ended bool, fields []hpack.HeaderField) {
	u.mu.Lock()
	us := u.streams[id]
	u.mu.Unlock()
	if us == nil {
		return
	}
	if fields == nil {
		u.abort(id, http2.ErrCodeCancel, gstatus.Errorf(codes.Internal, "milvus-ha-proxy: cluster %s sent a header list that is too large", u.cluster))
		return
	}
	if !us.gotHeaders {
		us.gotHeaders = true
		us.hdr = fields
		if !ended {
			return
		}
	} else {
		us.trailers = fields
	}
	if !ended {
		// A second HEADERS without END_STREAM: not gRPC.
		u.finish(id, func(us *ustream) {
			us.err = gstatus.Errorf(codes.Internal, "milvus-ha-proxy: cluster %s sent unexpected headers", u.cluster)
		})
		return
	}
	if us.trailers == nil {
		us.trailers = us.hdr // trailers-only response
	}
	u.finishFL(id, nil, &u.fl)
}

// returnWindow returns what us received and was not given back as
// window, when us is still open (a resume of the response budget).
func (u *uconn) returnWindow(us *ustream) {
	u.mu.Lock()
	open := u.streams[us.id] == us
	u.mu.Unlock()
	if !open {
		return
	}
	if n := int(us.unreturned.Swap(0)); n > 0 {
		u.w.writeWindowUpdates(us.id, 0, n, nil)
	}
}

func (u *uconn) onData(f *http2.DataFrame) {
	n := int(f.Header().Length)
	us, sendConn := recvData(&u.mu, &u.streams, &u.recvConn, f.StreamID, n)
	sendStream := 0
	var err error
	if us != nil {
		us.rmu.Lock()
		if us.ended {
			us.rmu.Unlock()
			u.w.writeWindowUpdates(f.StreamID, sendConn, 0, &u.fl)
			return
		}
		err = us.appendData(f.Data(), u.r.maxMsg)
		if us.acct != nil && n > 0 {
			us.charge(n)
		}
		us.rmu.Unlock()
		// The stream's window is returned only while the response
		// budget admits more (else the cluster stops sending this
		// stream until a resume returns it); the connection's window
		// above always is: other calls share it.
		if !f.StreamEnded() && us.unreturned.Add(int64(n)) >= int64(u.r.streamUpdate) &&
			(us.acct == nil || us.grant()) {
			sendStream = int(us.unreturned.Swap(0))
		}
	}
	u.w.writeWindowUpdates(f.StreamID, sendConn, sendStream, &u.fl)
	if us == nil {
		return
	}
	if err != nil {
		u.abort(f.StreamID, http2.ErrCodeCancel, err)
		return
	}
	if f.StreamEnded() {
		u.finishFL(f.StreamID, func(us *ustream) {
			us.err = gstatus.Errorf(codes.Internal, "milvus-ha-proxy: cluster %s ended the stream without trailers", u.cluster)
		}, &u.fl)
	}
}

// appendData adds DATA to the response message. Its buffer is taken once
// the 5-byte prefix gives its length, at most bodyStart bytes at first,
// and grows as bytes arrive: a stream held by the response budget holds
// about what it received, not what its prefix claims.
func (us *ustream) appendData(p []byte, maxMsg int) error {
	for len(p) > 0 {
		if us.nprefix < 5 {
			k := copy(us.prefix[us.nprefix:], p)
			us.nprefix += k
			p = p[k:]
			if us.nprefix < 5 {
				return nil
			}
			if us.prefix[0] != 0 {
				return gstatus.Errorf(codes.Internal, "milvus-ha-proxy: compressed response from a backend (none was asked for)")
			}
			if us.bodyBuf != nil {
				return gstatus.Errorf(codes.Internal, "milvus-ha-proxy: more than one message in a unary response")
			}
			size := int(binary.BigEndian.Uint32(us.prefix[1:]))
			if size > maxMsg {
				return gstatus.Errorf(codes.ResourceExhausted, "milvus-ha-proxy: response of %d bytes exceeds the limit of %d", size, maxMsg)
			}
			if poolDrops(size) {
				// See poolDrops; small keeps the pointer result
				// needs without an allocation of its own.
				us.small = make([]byte, 0, size)
				us.bodyBuf = &us.small
			} else {
				us.bodyBuf = mem.DefaultBufferPool().Get(min(size, bodyStart))
			}
			us.body, us.want = (*us.bodyBuf)[:0], size
			continue
		}
		k := min(us.want-len(us.body), len(p))
		if k == 0 {
			// Bytes past the message: the start of a second one.
			us.nprefix = 0
			continue
		}
		if len(us.body)+k > cap(us.body) {
			us.grow(len(us.body) + k)
		}
		us.body = append(us.body, p[:k]...)
		p = p[k:]
	}
	return nil
}

// poolDrops reports whether an answer of n bytes gets a buffer of its own
// rather than one of grpc's default pool: mem.NewBuffer never gives a
// buffer of at most mem.BufferPoolingThreshold (1 KiB) back to its pool
// (result's buffer is then a SliceBuffer), so for answers that fit the
// pool's smallest tier (256 B) every Get missed: a sync.Pool miss and two
// allocations per call. (Requests keep the pool: a few hundred bytes get
// the 4 KiB tier, which NewBuffer does give back.)
func poolDrops(n int) bool { return mem.IsBelowBufferPoolingThreshold(n) }

// bodyStart is an answer's first buffer at most: a tier of grpc's default
// buffer pool (256 B, 4, 16, 32 KiB, 1 MiB), whose next tier would give
// any buffer between 32 KiB and 1 MiB a whole MiB.
const bodyStart = 32 << 10

// grow moves the body to a buffer of at least n bytes (doubling, up to
// the message's length): from the pool past its largest tier (1 MiB),
// else allocated at its size, so that a held answer costs what arrived.
func (us *ustream) grow(n int) {
	size := min(max(n, 2*cap(us.body)), us.want)
	var nb *[]byte
	if size >= 1<<20 {
		nb = mem.DefaultBufferPool().Get(size)
	} else {
		b := make([]byte, size)
		nb = &b
	}
	body := append((*nb)[:0], us.body...)
	us.putBody()
	us.bodyBuf, us.body = nb, body
}

func (us *ustream) freeBody() {
	if us.bodyBuf != nil {
		us.putBody()
		us.bodyBuf, us.body = nil, nil
	}
}

// putBody gives the body's buffer back to the pool (any capacity goes
// back safely), unless it is small: a pointer into the stream.
func (us *ustream) putBody() {
	if us.bodyBuf != &us.small {
		mem.DefaultBufferPool().Put(us.bodyBuf)
	}
	us.small = nil
}

// statusErr reads the call's outcome from the response headers and
// trailers: nil for grpc-status 0 with a complete message.
func (us *ustream) statusErr(cluster string) error {
	var code, msg, details, httpStatus string
	for _, f := range us.hdr {
		if f.Name == ":status" {
			httpStatus = f.Value
		}
	}
	for _, f := range us.trailers {
		switch f.Name {
		case "grpc-status":
			code = f.Value
		case "grpc-message":
			msg = f.Value
		case "grpc-status-details-bin":
			details = f.Value
		}
	}
	if httpStatus != "" && httpStatus != "200" && code == "" {
		return &backendError{st: gstatus.Newf(httpStatusCode(httpStatus), "cluster %s answered HTTP %s", cluster, httpStatus)}
	}
	if code == "0" {
		if us.bodyBuf == nil || len(us.body) != us.want {
			return gstatus.Errorf(codes.Internal, "milvus-ha-proxy: cluster %s sent no complete response message", cluster)
		}
		return nil
	}
	if code == "" {
		return gstatus.Errorf(codes.Internal, "milvus-ha-proxy: cluster %s sent no grpc-status", cluster)
	}
	c := codes.Unknown
	var v uint32
	if _, err := fmt.Sscan(code, &v); err == nil {
		c = codes.Code(v)
	}
	st := gstatus.New(c, decodeGRPCMessage(msg))
	if details != "" {
		if b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(details, "=")); err == nil {
			var sp status.Status
			if proto.Unmarshal(b, &sp) == nil {
				st = gstatus.FromProto(&sp)
			}
		}
	}
	return &backendError{st: st, hdr: us.hdr, trailers: us.trailers}
}

// backendError is a gRPC error a cluster answered, with its headers and
// trailers as received so the relay can pass them on unchanged.
type backendError struct {
	st            *gstatus.Status
	hdr, trailers []hpack.HeaderField
}

func (e *backendError) Error() string               { return e.st.Err().Error() }
func (e *backendError) GRPCStatus() *gstatus.Status { return e.st }
