package sim

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// replicator is the CDC of one source->target edge: one goroutine per
// pchannel streams this cluster's WAL to the target's pchannel with the same
// index.
type replicator struct {
	target string
	done   chan struct{}
}

// ensureReplicator starts CDC to target unless it is running.
func (c *Cluster) ensureReplicator(target string) {
	c.repl.mu.Lock()
	defer c.repl.mu.Unlock()
	if c.stopped() || c.repl.cdc[target] != nil {
		return
	}
	r := &replicator{target: target, done: make(chan struct{})}
	c.repl.cdc[target] = r
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		var wg sync.WaitGroup
		for p := range c.wals {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.replicateChannel(target, p)
			}()
		}
		wg.Wait()
		c.repl.mu.Lock()
		delete(c.repl.cdc, target)
		again := c.repl.targets[target]
		c.repl.mu.Unlock()
		close(r.done)
		if again {
			c.ensureReplicator(target)
		}
	}()
}

// startReplicatorsAfterRecovery resumes CDC after a restart: to every current
// target, and to former targets that may not have received the configuration
// message that ended their replication.
func (c *Cluster) startReplicatorsAfterRecovery() {
	c.repl.mu.Lock()
	var ts []string
	for t := range c.repl.targets {
		ts = append(ts, t)
	}
	for t := range c.repl.removedAt {
		if !c.repl.targets[t] {
			ts = append(ts, t)
		}
	}
	c.repl.mu.Unlock()
	for _, t := range ts {
		c.ensureReplicator(t)
	}
}

func (c *Cluster) replicateChannel(target string, p int) {
	backoff := 20 * time.Millisecond
	for {
		progressed, done, err := c.replicateSession(target, p)
		if done || c.stopped() {
			return
		}
		if progressed {
			backoff = 20 * time.Millisecond
		}
		c.log.Debug("replicate stream to target interrupted; reconnecting", "target", target, "pchannel", c.pchannels[p], "err", err, "backoff", backoff)
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Second)
	}
}

// normalizeURI turns a Milvus connection uri into a gRPC target.
func normalizeURI(uri string) (string, error) {
	switch {
	case strings.HasPrefix(uri, "https://"):
		return "", fmt.Errorf("TLS uri %q is not supported by the simulator", uri)
	case strings.HasPrefix(uri, "http://"):
		uri = strings.TrimPrefix(uri, "http://")
	case strings.HasPrefix(uri, "tcp://"):
		uri = strings.TrimPrefix(uri, "tcp://")
	}
	return strings.TrimSuffix(uri, "/"), nil
}

// dialMilvus opens a plaintext connection to a Milvus-API endpoint and returns
// a context decorator that adds the token as Milvus's authorization header.
func dialMilvus(uri, token string) (*grpc.ClientConn, func(context.Context) context.Context, error) {
	target, err := normalizeURI(uri)
	if err != nil {
		return nil, nil, err
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20)))
	if err != nil {
		return nil, nil, err
	}
	auth := func(ctx context.Context) context.Context { return ctx }
	if token != "" {
		v := base64.StdEncoding.EncodeToString([]byte(token))
		auth = func(ctx context.Context) context.Context {
			return metadata.AppendToOutgoingContext(ctx, "authorization", v)
		}
	}
	return conn, auth, nil
}

func isReplicateViolation(err error) bool {
	s, ok := status.FromError(err)
	return ok && s.Code() == codes.FailedPrecondition && strings.Contains(s.Message(), "REPLICATE_VIOLATION")
}

// replicateSession runs one CreateReplicateStream to target for pchannel p.
// It resumes after the target's checkpoint (GetReplicateInfo), or from the
// configuration message that made target a target. done reports that this
// edge is finished: the configuration message that removed it was confirmed.
func (c *Cluster) replicateSession(target string, p int) (progressed, done bool, err error) {
	mc, isTarget, start, removed := c.edgeOf(target, p)
	if mc == nil {
		return false, !isTarget, fmt.Errorf("target %s is not in the replicate configuration", target)
	}
	conn, auth, err := dialMilvus(mc.GetConnectionParam().GetUri(), mc.GetConnectionParam().GetToken())
	if err != nil {
		return false, false, err
	}
	defer conn.Close()
	client := milvuspb.NewMilvusServiceClient(conn)
	sctx, cancel := context.WithCancelCause(auth(c.ctx))
	defer cancel(nil)

	next, err := c.resumePoint(sctx, client, mc.GetPchannels()[p], start)
	if err != nil {
		return false, !isTarget && isReplicateViolation(err), err
	}
	if removed > 0 && next > removed {
		return false, true, nil
	}
	stream, err := client.CreateReplicateStream(sctx)
	if err != nil {
		return false, false, err
	}
	conf := newConfirmations()
	go conf.receive(stream, cancel)
	return c.sendWAL(sctx, stream, conf, target, p, next)
}

// edgeOf is what the replication configuration says of the edge to target
// on pchannel p: target's entry (nil when it is not in the configuration),
// whether it is a target, and the WAL ids where the edge starts and where
// it was removed (0: not removed).
func (c *Cluster) edgeOf(target string, p int) (mc *commonpb.MilvusCluster, isTarget bool, start, removed int64) {
	c.repl.mu.Lock()
	defer c.repl.mu.Unlock()
	mc = clusterOf(c.repl.cfg, target)
	isTarget = c.repl.targets[target]
	if s := c.repl.startPos[target]; len(s) > p {
		start = s[p]
	}
	if r := c.repl.removedAt[target]; len(r) > p {
		removed = r[p]
	}
	return mc, isTarget, start, removed
}

// resumePoint is the WAL id replication to the target's pchannel resumes
// at: after the target's checkpoint, and never before start.
func (c *Cluster) resumePoint(ctx context.Context, client milvuspb.MilvusServiceClient, pchannel string, start int64) (int64, error) {
	ictx, icancel := context.WithTimeout(ctx, 5*time.Second)
	info, err := client.GetReplicateInfo(ictx, &milvuspb.GetReplicateInfoRequest{SourceClusterId: c.id, TargetPchannel: pchannel})
	icancel()
	if err != nil {
		return 0, fmt.Errorf("get replicate info: %w", err)
	}
	next := start
	if id := info.GetCheckpoint().GetMessageId(); id != nil {
		ck, err := parseMessageID(id)
		if err != nil {
			return 0, err
		}
		next = ck + 1
	}
	// A checkpoint before the configuration message that made target a
	// target is the target's from an earlier epoch of this source (it
	// followed another cluster since): replication starts at that message,
	// never earlier. Resuming from the stale one would resend old messages
	// and take an old configuration message for the end of this edge.
	return max(next, start, 1), nil
}

// confirmations is the highest time tick a replicate stream's target
// confirmed, with a signal on every confirmation.
type confirmations struct {
	ts atomic.Uint64
	ch chan struct{}
}

func newConfirmations() *confirmations { return &confirmations{ch: make(chan struct{}, 1)} }

// receive reads the stream's confirmations until it fails, then cancels
// the session with the failure.
func (cf *confirmations) receive(stream milvuspb.MilvusService_CreateReplicateStreamClient, cancel context.CancelCauseFunc) {
	for {
		resp, err := stream.Recv()
		if err != nil {
			cancel(err)
			return
		}
		ts := resp.GetReplicateConfirmedMessageInfo().GetConfirmedTimeTick()
		if ts > cf.ts.Load() {
			cf.ts.Store(ts)
		}
		select {
		case cf.ch <- struct{}{}:
		default:
		}
	}
}

// sendWAL sends pchannel p's WAL from id next on, as it grows, until the
// session breaks or a configuration message that ends the edge to target
// is confirmed (done).
func (c *Cluster) sendWAL(sctx context.Context, stream milvuspb.MilvusService_CreateReplicateStreamClient, conf *confirmations, target string, p int, next int64) (progressed, done bool, err error) {
	w := c.wals[p]
	for id := next; ; id++ {
		e, err := w.wait(sctx, id)
		if err != nil {
			return progressed, c.sessionDone(target, sctx), context.Cause(sctx)
		}
		if err := stream.Send(&milvuspb.ReplicateRequest{Request: &milvuspb.ReplicateRequest_ReplicateMessage{
			ReplicateMessage: &milvuspb.ReplicateMessage{SourceClusterId: c.id, Message: e.immutable(w.name)}}}); err != nil {
			<-sctx.Done()
			return progressed, c.sessionDone(target, sctx), context.Cause(sctx)
		}
		progressed = true
		if e.kind != kindAlterReplicaConfig || c.edgeIn(e, target) {
			continue
		}
		// This configuration message ends replication to target: drain it,
		// wait for its confirmation, stop.
		for conf.ts.Load() < e.ts {
			select {
			case <-conf.ch:
			case <-sctx.Done():
				return progressed, c.sessionDone(target, sctx), context.Cause(sctx)
			}
		}
		c.log.Info("replication to target drained and stopped", "target", target, "pchannel", w.name)
		return progressed, true, nil
	}
}

// sessionDone decides, after a session broke, whether there is nothing left
// to do: the target refuses us and we are no longer its source.
func (c *Cluster) sessionDone(target string, sctx context.Context) bool {
	c.repl.mu.Lock()
	isTarget := c.repl.targets[target]
	c.repl.mu.Unlock()
	return !isTarget && isReplicateViolation(context.Cause(sctx))
}

// edgeIn reports whether configuration message e keeps c -> target.
func (c *Cluster) edgeIn(e *entry, target string) bool {
	req := &milvuspb.UpdateReplicateConfigurationRequest{}
	if err := proto.Unmarshal(e.payload, req); err != nil {
		return true
	}
	return topologyOf(req.GetReplicateConfiguration(), c.id).targets[target]
}
