package abuse

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/abuse/backend"
)

// abuseColl is the collection every abusive request names, so that the
// backend's counters tell them from the bystander's.
const abuseColl = backend.AbuseCollection

// probes are the rows of the table, in the order of the audit.
var probes = []probe{
	{name: "slow-reader", run: probeSlowReader, durations: func(d *durations, long bool) {
		if long {
			d.during = 75 * time.Second // 3 connections 25 s apart
			d.after = time.Minute
		} else {
			d.during = 3 * time.Second
		}
	}},
	{name: "cancel-8-per-s", run: probeCancels, durations: func(d *durations, long bool) {
		if !long {
			d.during = 3 * time.Second
		}
	}},
	{name: "rapid-reset-5-per-s", run: func(ctx context.Context, env probeEnv) (string, error) {
		return probeRapidReset(ctx, env, 200*time.Millisecond)
	}},
	{name: "rapid-reset-max", run: func(ctx context.Context, env probeEnv) (string, error) {
		return probeRapidReset(ctx, env, 0)
	}},
	{name: "garbage-insert-5-per-s", run: probeGarbageInsert},
	{name: "upper-case-header-5-per-s", run: probeUpperCaseHeader},
	{name: "continuation-flood", run: probeContinuationFlood},
	{name: "unary-no-end-stream", run: probeUnaryNoEndStream},
	{name: "length-255MiB-1KiB-sent", run: probeLyingLength},
	{name: "idle-tcp-over-fd-limit", run: probeIdleTCP, nofile: fdLimit,
		conns: func(long bool) int { return fdLimit(long) + 100 }, perConnRSS: 16 << 10},
	{name: "idle-after-preface", run: probeIdleAfterPreface, conns: idleConns, perConnRSS: 64 << 10,
		durations: func(d *durations, long bool) {
			if long {
				d.during = 70 * time.Second
			}
		}},
	{name: "zero-window-4MiB-answers", run: probeZeroWindow, durations: longAfter},
	{name: "8MiB-header", run: probeBigHeader, durations: longAfter},
	{name: "hpack-bomb", run: probeHPACKBomb},
}

// longAfter gives the long form a minute after the probe, for the memory
// the probe made the target take to come back.
func longAfter(d *durations, long bool) {
	if long {
		d.after = time.Minute
	}
}

// fdLimit is the target's RLIMIT_NOFILE in the fd probe.
func fdLimit(long bool) int {
	if long {
		return 1024
	}
	return 256
}

func idleConns(long bool) int {
	if long {
		return 3000
	}
	return 300
}

// searchMsg is a Search of the abuse collection as a gRPC message; params
// go to the backend (backend.ParamRespBytes, backend.ParamDelay).
func searchMsg(params ...string) []byte {
	return grpcFrame(searchRequest(abuseColl, params...))
}

// probeSlowReader: three connections, opened over the phase, that never
// read their sockets (a client stuck in GC, a host gone behind a full
// receive buffer) and keep asking for large answers, ten a second each.
// Their answers back up in the target; nobody else's may.
func probeSlowReader(ctx context.Context, env probeEnv) (string, error) {
	const conns = 3
	answer := 1 << 20
	if env.long {
		answer = 4 << 20
	}
	block := staticBlock(grpcHeaders("Search"))
	msg := searchMsg(backend.ParamRespBytes, strconv.Itoa(answer))
	var wg sync.WaitGroup
	var requests atomic.Int64
	opened := 0
	for range conns {
		h, err := dialH2(ctx, env.addr, h2options{
			setWindow: true, initialWindow: 1<<31 - 1, connWindow: 1<<31 - 1 - 65535,
			noRead: true, readBuffer: 4 << 10,
		})
		if err != nil {
			break // the phase ended
		}
		opened++
		wg.Go(func() {
			defer h.close()
			for ctx.Err() == nil {
				if h.rawStreams(1, block, msg, false) != nil {
					<-ctx.Done() // the target stopped reading or closed: hold on
					return
				}
				requests.Add(1)
				sleepCtx(ctx, 100*time.Millisecond)
			}
		})
		if !sleepCtx(ctx, env.during/conns) {
			break
		}
	}
	wg.Wait()
	return fmt.Sprintf("%d connections asked for %d answers of %s, never read", opened, requests.Load(), mib(int64(answer))), nil
}

// probeCancels: an ordinary grpc-go client that starts 8 slow Searches at
// once every second and cancels them together 50 ms later, as an
// application does when the request that fanned them out is abandoned.
func probeCancels(ctx context.Context, env probeEnv) (string, error) {
	conn, err := grpc.NewClient(env.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	mc := milvuspb.NewMilvusServiceClient(conn)
	req := searchRequest(abuseColl, backend.ParamDelay, "500ms")
	var mu sync.Mutex
	codes := map[string]int{}
	var wg sync.WaitGroup
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	for {
		cctx, cancel := context.WithCancel(ctx)
		t := time.AfterFunc(50*time.Millisecond, cancel)
		for range 8 {
			wg.Go(func() {
				_, err := mc.Search(cctx, req)
				mu.Lock()
				codes[status.Code(err).String()]++
				mu.Unlock()
			})
		}
		select {
		case <-ctx.Done():
			wg.Wait()
			t.Stop()
			cancel()
			return "cancelled Searches ended " + countList(codes), nil
		case <-tk.C:
		}
	}
}

// probeRapidReset: HEADERS and DATA of a Search, then RST_STREAM(CANCEL)
// at once (CVE-2023-44487), every interval, or as fast as the socket takes
// them when interval is 0; a connection the target ends is replaced. The
// count is of resets written before the target's GOAWAY (some of the last
// batch may not have reached it).
func probeRapidReset(ctx context.Context, env probeEnv, interval time.Duration) (string, error) {
	block := staticBlock(grpcHeaders("Search"))
	msg := searchMsg()
	batch := 1
	if interval == 0 {
		batch = 64
	}
	var resets, conns int
	var last string
	for ctx.Err() == nil {
		h, err := dialH2(ctx, env.addr, h2options{noTrack: true, writeBuffer: 64 << 10})
		if err != nil {
			if ctx.Err() == nil {
				last = "dial: " + err.Error()
				sleepCtx(ctx, 10*time.Millisecond)
			}
			continue
		}
		conns++
		// Until the target sends GOAWAY (then a new connection, as an
		// attacker would), counting what it had read by then.
		for ctx.Err() == nil && !h.closed() && !h.goneAway() {
			if err := h.rawStreams(batch, block, msg, true); err != nil {
				break
			}
			resets += batch
			if interval > 0 && !sleepCtx(ctx, interval) {
				break
			}
		}
		if s := h.summary(); s != "" {
			last = s
		}
		h.close()
	}
	return fmt.Sprintf("%d resets on %d connections; last: %s", resets, conns, last), nil
}

// rawCodec sends messages as they are, so a client can send bytes that are
// not a valid message.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// garbageInsert is an InsertRequest whose fields_data is not a valid
// FieldData (a field with wire type 7): a proxy that reads only the
// routing fields passes it on, and the backend refuses to decode it.
func garbageInsert() []byte {
	b, err := proto.Marshal(&milvuspb.InsertRequest{CollectionName: abuseColl, NumRows: 1})
	if err != nil {
		panic(err)
	}
	b = protowire.AppendTag(b, 5, protowire.BytesType)
	return protowire.AppendBytes(b, []byte{0x0f, 0x00, 0x00})
}

// probeGarbageInsert: five Inserts a second that the backend cannot
// decode: the backend's answer to a bad request is not a cluster failure.
func probeGarbageInsert(ctx context.Context, env probeEnv) (string, error) {
	conn, err := grpc.NewClient(env.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	body := garbageInsert()
	codes := map[string]int{}
	var lastMsg string
	unknown := 0
	for {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		var out []byte
		err := conn.Invoke(cctx, "/milvus.proto.milvus.MilvusService/Insert", &body, &out, grpc.ForceCodec(rawCodec{}))
		cancel()
		if ctx.Err() != nil {
			break
		}
		// The refusal comes as a gRPC status, or (Milvus's way) as the
		// Status of a MutationResult.
		var mr milvuspb.MutationResult
		switch {
		case err != nil:
			codes[status.Code(err).String()]++
			lastMsg = status.Convert(err).Message()
		case proto.Unmarshal(out, &mr) != nil:
			codes["OK, undecodable answer"]++
		default:
			codes["OK, status "+mr.GetStatus().GetErrorCode().String()]++
			lastMsg = mr.GetStatus().GetReason()
		}
		if strings.Contains(lastMsg, "outcome unknown") {
			unknown++
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			break
		}
	}
	note := fmt.Sprintf("garbage Inserts ended %s; last: %s", countList(codes), truncate(strings.ReplaceAll(lastMsg, "\u00a0", " "), 100))
	if unknown > 0 {
		// The backend answered: the request cannot have been lost with
		// the connection, and the client must not be told it might.
		return note, fmt.Errorf("%d of the backend's refusals were reported as an unknown outcome (connection failure)", unknown)
	}
	return note, nil
}

// probeUpperCaseHeader: five requests a second with a header name in
// upper case, which HTTP/2 forbids (RFC 9113 section 8.2.1): refused at
// the edge, never passed to a backend that resets it.
func probeUpperCaseHeader(ctx context.Context, env probeEnv) (string, error) {
	block := staticBlock(grpcHeaders("Search", hpack.HeaderField{Name: "X-Abuse", Value: "upper"}))
	msg := searchMsg()
	sent, conns := 0, 0
	outcomes := map[string]int{}
	for ctx.Err() == nil {
		h, err := dialH2(ctx, env.addr, h2options{})
		if err != nil {
			sleepCtx(ctx, 10*time.Millisecond)
			continue
		}
		conns++
		for ctx.Err() == nil && !h.closed() {
			if h.rawStreams(1, block, msg, false) != nil {
				break
			}
			sent++
			sleepCtx(ctx, 200*time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond) // the last answer
		h.close()
		h.mu.Lock()
		for k, v := range h.statuses {
			outcomes[k] += v
		}
		for k, v := range h.resets {
			outcomes["RST "+k.String()] += v
		}
		if h.goAway != nil {
			outcomes["GOAWAY "+h.goAway.ErrCode.String()]++
		}
		h.mu.Unlock()
	}
	note := fmt.Sprintf("%d requests on %d connections: %s", sent, conns, countList(outcomes))
	// Refused at the edge, as grpc-go and net/http do: the stream reset
	// with PROTOCOL_ERROR (RFC 9113 section 8.1.1), an HTTP 400, or the
	// connection ended with GOAWAY PROTOCOL_ERROR. Anything else (a gRPC
	// status) means the request went on to the backend.
	refused := 0
	for k, n := range outcomes {
		switch k {
		case "RST " + http2.ErrCodeProtocol.String(), ":status 400", "GOAWAY " + http2.ErrCodeProtocol.String():
			refused += n
		}
	}
	if refused == 0 && sent > 0 {
		return note, fmt.Errorf("none of %d requests with an upper-case header name was refused at the edge", sent)
	}
	return note, nil
}

// floodFragment is 16,000 bytes of complete header fields, the payload of
// every CONTINUATION frame of the flood.
func floodFragment() []byte {
	var b []byte
	for i := 0; len(b) < 16000-120; i++ {
		b = append(b, literal("x-flood-"+strconv.Itoa(i%100), strings.Repeat("f", 90))...)
	}
	return b
}

// probeContinuationFlood: four connections each open a stream and send
// CONTINUATION frames without end (CVE-2023-45288); a connection the
// target ends is replaced. The target must end every flooding connection
// (GOAWAY or close) before it has taken floodCap bytes.
func probeContinuationFlood(ctx context.Context, env probeEnv) (string, error) {
	const conns = 4
	const floodCap = 64 << 20
	head := staticBlock(grpcHeaders("Search"))
	frag := floodFragment()
	var mu sync.Mutex
	var closedAt []int64 // bytes sent on each connection the target closed
	var openAt []int64   // bytes sent on each connection still open at the end
	var last string
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			for ctx.Err() == nil {
				h, err := dialH2(ctx, env.addr, h2options{writeBuffer: 256 << 10})
				if err != nil {
					sleepCtx(ctx, 10*time.Millisecond)
					continue
				}
				err = h.write(func() error {
					return h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: head})
				})
				// Until the target sends GOAWAY or closes: what it
				// reads and drops after its GOAWAY costs it little.
				for err == nil && ctx.Err() == nil && !h.closed() && !h.goneAway() {
					err = h.write(func() error {
						for range 16 {
							if err := h.fr.WriteContinuation(1, false, frag); err != nil {
								return err
							}
						}
						return nil
					})
				}
				gone := h.closed() || h.goneAway() || (err != nil && ctx.Err() == nil)
				n := h.sentBeforeEnd()
				s := h.summary()
				h.close()
				mu.Lock()
				if gone {
					closedAt = append(closedAt, n)
				} else {
					openAt = append(openAt, n)
				}
				if s != "" {
					last = s
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(closedAt)
	slices.Sort(openAt)
	note := fmt.Sprintf("%d connections ended by the target (GOAWAY or close)", len(closedAt))
	if len(closedAt) > 0 {
		note += fmt.Sprintf(" after at most %s", mib(closedAt[len(closedAt)-1]))
	}
	if len(openAt) > 0 {
		note += fmt.Sprintf(", %d still open at the end (up to %s sent)", len(openAt), mib(openAt[len(openAt)-1]))
	}
	note += "; last: " + last
	// What an ended connection took before its GOAWAY reached us is the
	// target's limit plus what was in flight (loopback buffers, a loaded
	// machine's delays): reported, not judged. A connection still open at
	// the end must not have taken more than floodCap.
	for _, n := range openAt {
		if n > floodCap {
			return note, fmt.Errorf("a flooding connection took %s and was never ended (cap %s)", mib(n), mib(floodCap))
		}
	}
	return note, nil
}

// probeUnaryNoEndStream: one unary Search stream that sends message after
// message and never ends: the target must refuse it (a unary call has
// exactly one request message) before it has taken unaryCap bytes.
func probeUnaryNoEndStream(ctx context.Context, env probeEnv) (string, error) {
	unaryCap := int64(16 << 20)
	req := searchRequest(abuseColl)
	req.SearchInput = &milvuspb.SearchRequest_PlaceholderGroup{PlaceholderGroup: make([]byte, 64<<10)}
	msg := grpcFrame(req)
	h, err := dialH2(ctx, env.addr, h2options{writeBuffer: 64 << 10})
	if err != nil {
		return "", err
	}
	defer h.close()
	id := h.newStream()
	if err := h.writeBlock(id, staticBlock(grpcHeaders("Search")), false); err != nil {
		return "", err
	}
	msgs := 0
	for h.sent.Load() < unaryCap {
		if err := h.writeData(ctx, id, msg, false, true); err != nil {
			break
		}
		msgs++
	}
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	refused := h.waitEnded(wctx, id) || h.closed()
	cancel()
	sent := h.sent.Load()
	note := fmt.Sprintf("%d messages (%s) sent; %s", msgs, mib(sent), h.summary())
	switch {
	case refused:
		return note, nil
	case sent >= unaryCap:
		return note, fmt.Errorf("no refusal after %s (%d messages) on a unary stream", mib(sent), msgs)
	default:
		return note, fmt.Errorf("no answer on a unary stream with %d messages (%s sent, then no flow-control credit)", msgs, mib(sent))
	}
}

// probeLyingLength: 4 connections × 16 streams whose message prefix claims
// 255 MiB and which send 1 KiB of it: memory follows the bytes that
// arrive, not the claim.
func probeLyingLength(ctx context.Context, env probeEnv) (string, error) {
	conns, streams := 4, 16
	if !env.long {
		streams = 4 // 4 GiB of claims: enough to see, bounded on a shared machine
	}
	block := staticBlock(grpcHeaders("Search"))
	data := make([]byte, 5+1024)
	data[1], data[2], data[3], data[4] = 0x0f, 0xf0, 0, 0 // 255 MiB
	var hs []*h2conn
	defer func() {
		for _, h := range hs {
			h.close()
		}
	}()
	for range conns {
		h, err := dialH2(ctx, env.addr, h2options{})
		if err != nil {
			break
		}
		hs = append(hs, h)
		for range streams {
			id := h.newStream()
			if h.writeBlock(id, block, false) != nil || h.writeData(ctx, id, data, false, true) != nil {
				break
			}
		}
	}
	<-ctx.Done()
	var sum []string
	for _, h := range hs {
		if s := h.summary(); s != "" {
			sum = append(sum, s)
		}
	}
	return fmt.Sprintf("%d connections × %d streams claiming 255 MiB, 1 KiB sent; %s", len(hs), streams, strings.Join(sum, "; ")), nil
}

// probeIdleTCP: more idle TCP connections than the target's fd limit
// allows: it refuses what it cannot take, keeps serving the connections
// it has, and accepts again once they leave.
func probeIdleTCP(ctx context.Context, env probeEnv) (string, error) {
	n := fdLimit(env.long) + 100
	var mu sync.Mutex
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var failed atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				dctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
				var d net.Dialer
				c, err := d.DialContext(dctx, "tcp", env.addr)
				cancel()
				if err != nil {
					failed.Add(1)
					continue
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	peakFDs := openFDs(env.target.pid)
	<-ctx.Done()
	return fmt.Sprintf("%d idle connections opened (%d dials failed) against a limit of %d fds; target had %d fds open",
		len(conns), failed.Load(), fdLimit(env.long), peakFDs), nil
}

// probeIdleAfterPreface: many connections that send the preface and
// SETTINGS, answer PINGs, and then nothing: the target closes every one
// within its idle timeout (idleTimeout: 0.5 s in the short form, 30 s in
// the long one, whose phase lasts 70 s as the audit's did).
func probeIdleAfterPreface(ctx context.Context, env probeEnv) (string, error) {
	n := idleConns(env.long)
	var hs []*h2conn
	defer func() {
		for _, h := range hs {
			h.close()
		}
	}()
	// The connections outlive the phase by as long as the last one opened
	// needs for its idle timeout to pass (opening 300 takes up to 2 s on a
	// loaded machine).
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	start := time.Now()
	for range n {
		if ctx.Err() != nil {
			break
		}
		h, err := dialH2(cctx, env.addr, h2options{})
		if err != nil {
			break
		}
		hs = append(hs, h)
	}
	opened := time.Since(start)
	<-ctx.Done()
	for deadline := start.Add(opened + 2*idleTimeout(env.long) + time.Second); time.Now().Before(deadline); {
		ended := 0
		for _, h := range hs {
			if h.closed() || h.goneAway() {
				ended++
			}
		}
		if ended == len(hs) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	closed := 0
	var how []string
	var first, last time.Duration
	for _, h := range hs {
		if h.closed() || h.goneAway() {
			closed++
			how = append(how, h.summary())
			h.mu.Lock()
			at := h.endedAt.Sub(start)
			h.mu.Unlock()
			if first == 0 || at < first {
				first = at
			}
			last = max(last, at)
		}
	}
	note := fmt.Sprintf("%d of %d idle connections ended by the target (GOAWAY or close) within %s (opened in %s)",
		closed, len(hs), time.Since(start).Round(100*time.Millisecond), opened.Round(100*time.Millisecond))
	if closed > 0 {
		note += fmt.Sprintf(", at %s to %s", first.Round(100*time.Millisecond), last.Round(100*time.Millisecond))
	}
	if len(how) > 0 {
		note += ": " + strings.Join(uniq(how), "; ")
	}
	if closed < len(hs) {
		return note, fmt.Errorf("%d idle connections still open after %s (idle timeout %s)",
			len(hs)-closed, time.Since(start).Round(100*time.Millisecond), idleTimeout(env.long))
	}
	return note, nil
}

// probeZeroWindow: one connection announces a zero stream window and asks
// for many 4 MiB answers: the target must hold no more than its budget of
// them (back-pressure on the backend), and let go when the client leaves.
func probeZeroWindow(ctx context.Context, env probeEnv) (string, error) {
	streams := 40
	if env.long {
		streams = 200
	}
	h, err := dialH2(ctx, env.addr, h2options{setWindow: true, initialWindow: 0, noTrack: true})
	if err != nil {
		return "", err
	}
	defer h.close()
	if err := h.rawStreams(streams, staticBlock(grpcHeaders("Search")), searchMsg(backend.ParamRespBytes, strconv.Itoa(4<<20)), false); err != nil {
		return "", fmt.Errorf("sending requests: %w", err)
	}
	<-ctx.Done()
	return fmt.Sprintf("%d Searches of 4 MiB answers with a zero window; %s", streams, h.summary()), nil
}

// probeBigHeader: streams whose header block carries one 8 MiB field: a
// target refuses them at the edge, past its header list limit, without
// holding them whole.
func probeBigHeader(ctx context.Context, env probeEnv) (string, error) {
	streams := 16
	if env.long {
		streams = 50
	}
	block := append(staticBlock(grpcHeaders("Search")), literal("x-big", strings.Repeat("b", 8<<20))...)
	msg := searchMsg()
	sent, conns := 0, 0
	var sums []string
	before := env.backend.stats().Abuse
	for sent < streams && ctx.Err() == nil {
		h, err := dialH2(ctx, env.addr, h2options{writeBuffer: 256 << 10})
		if err != nil {
			if ctx.Err() == nil {
				sums = append(sums, "dial: "+err.Error())
			}
			break
		}
		conns++
		for sent < streams && ctx.Err() == nil && !h.closed() {
			id := h.newStream()
			if h.writeBlock(id, block, false) != nil || h.writeData(ctx, id, msg, true, true) != nil {
				break
			}
			sent++
		}
		sleepCtx(ctx, 200*time.Millisecond)
		if s := h.summary(); s != "" {
			sums = append(sums, s)
		}
		h.close()
	}
	<-ctx.Done()
	after := env.backend.stats().Abuse
	return fmt.Sprintf("%d streams with an 8 MiB header on %d connections, backend got %d Searches; %s",
		sent, conns, after["Search"]-before["Search"], strings.Join(uniq(sums), "; ")), nil
}

// probeHPACKBomb: one 4,000-byte header added to the dynamic table, then
// referenced a million times (1 MB on the wire, 4 GB decoded); a new
// connection each time the target ends one.
func probeHPACKBomb(ctx context.Context, env probeEnv) (string, error) {
	refs := 1_000_000
	block := append(staticBlock(grpcHeaders("Search")), literalIndexed("x-bomb", strings.Repeat("b", 4000))...)
	ref := hpackInt(nil, 7, 0x80, 62) // the first dynamic table entry
	block = append(block, bytesRepeat(ref, refs)...)
	msg := searchMsg()
	var sums []string
	bombs, conns := 0, 0
	before := env.backend.stats().Abuse
	for ctx.Err() == nil {
		h, err := dialH2(ctx, env.addr, h2options{writeBuffer: 256 << 10})
		if err != nil {
			sleepCtx(ctx, 10*time.Millisecond)
			continue
		}
		conns++
		id := h.newStream()
		if h.writeBlock(id, block, false) == nil && h.writeData(ctx, id, msg, true, true) == nil {
			bombs++
		}
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		h.waitEnded(wctx, id)
		cancel()
		if s := h.summary(); s != "" {
			sums = append(sums, s)
		}
		h.close()
	}
	after := env.backend.stats().Abuse
	return fmt.Sprintf("%d connections, %d bombs of %d references sent whole, backend got %d Searches; %s",
		conns, bombs, refs, after["Search"]-before["Search"], strings.Join(uniq(sums), "; ")), nil
}

func bytesRepeat(b []byte, n int) []byte {
	out := make([]byte, 0, len(b)*n)
	for range n {
		out = append(out, b...)
	}
	return out
}

// uniq counts equal strings: "3× a; b".
func uniq(ss []string) []string {
	n := map[string]int{}
	for _, s := range ss {
		n[s]++
	}
	var out []string
	for _, s := range slices.Sorted(maps.Keys(n)) {
		if n[s] > 1 {
			s = fmt.Sprintf("%d× %s", n[s], s)
		}
		out = append(out, s)
	}
	return out
}

// countList formats counts as "{a: 1, b: 2}".
func countList(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}
