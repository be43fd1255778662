package sim

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

type role int32

const (
	rolePrimary   role = iota // standalone, or the source of a replication topology
	roleSecondary             // a replication target
)

// ckpt is how far replication from one source pchannel has been applied.
type ckpt struct {
	srcPch string
	msgID  int64 // the source's message id; 0: none yet, ts is a floor
	ts     uint64
}

// proto renders ck as Milvus reports a checkpoint (no message id when none
// was replicated yet).
func (ck ckpt) proto(src string) *commonpb.ReplicateCheckpoint {
	out := &commonpb.ReplicateCheckpoint{ClusterId: src, Pchannel: ck.srcPch, TimeTick: ck.ts}
	if ck.msgID > 0 {
		out.MessageId = messageID(ck.msgID)
	}
	return out
}

type ckptKey struct {
	src string
	p   int // local pchannel index
}

// replState is the cluster's view of the replication topology.
type replState struct {
	mu      sync.Mutex
	cfg     *commonpb.ReplicateConfiguration // nil: never configured
	source  string                           // set on a secondary
	targets map[string]bool                  // set on a source
	changed chan struct{}                    // closed on every configuration change
	ckpts   map[ckptKey]ckpt
	salvage map[int]*commonpb.ReplicateCheckpoint
	// startPos[target][p] is the local id of the configuration message that
	// made target a target of this cluster: replication starts there.
	startPos map[string][]int64
	// removedAt[target][p] is the local id of the configuration message that
	// ended replication to target: CDC drains up to it, then stops.
	removedAt map[string][]int64
	inbound   map[ckptKey]*inboundStream
	cdc       map[string]*replicator
	// pchSource[p] is the cluster local pchannel p currently replicates
	// from. As in Milvus's replicate interceptor, only a configuration
	// message moves it (when it arrives on p, behind everything the old
	// source wrote there), and every other message must come from it: a
	// message from another cluster is a violation ("cluster id mismatch").
	// A configuration message from another cluster is taken (Milvus lets
	// them all through), but not while the current source is streaming on
	// p, so the streams of two sources never interleave.
	pchSource map[int]string
}

func (r *replState) init() {
	r.changed = make(chan struct{})
	r.targets = map[string]bool{}
	r.ckpts = map[ckptKey]ckpt{}
	r.salvage = map[int]*commonpb.ReplicateCheckpoint{}
	r.startPos = map[string][]int64{}
	r.removedAt = map[string][]int64{}
	r.inbound = map[ckptKey]*inboundStream{}
	r.cdc = map[string]*replicator{}
	r.pchSource = map[int]string{}
}

func (r *replState) checkpoint(src string, p int) (ckpt, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ck, ok := r.ckpts[ckptKey{src, p}]
	return ck, ok
}

func (r *replState) config() *commonpb.ReplicateConfiguration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cfg
}

// awaitConfigured returns the replicate configuration, waiting while the
// cluster has never been given one. Milvus 2.6 behaves so: its proxy reads
// the configuration from the streaming coordinator's assignment watcher,
// which holds "no configuration" as a nil helper and waits for a non-nil
// one (its test blocks_when_version_set_but_config_nil asserts it), so
// GetReplicateConfiguration and GetReplicateInfo on a cluster never
// configured return only at the caller's deadline, as DEADLINE_EXCEEDED
// (milvus-io/milvus#52686, reported on 2.6.17 and hotfix-2.6.22). They
// answer as soon as a configuration arrives; a cluster that is only to
// stand alone can be given the one-cluster configuration (itself, no
// topology), which is what a force promotion leaves.
func (c *Cluster) awaitConfigured(ctx context.Context) (*commonpb.ReplicateConfiguration, error) {
	c.configWaits.Add(1)
	defer c.configWaits.Add(-1)
	for {
		c.repl.mu.Lock()
		cfg, changed := c.repl.cfg, c.repl.changed
		c.repl.mu.Unlock()
		if cfg != nil {
			return cfg, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-c.ctx.Done():
			return nil, status.Errorf(codes.Unavailable, "cluster %s is shutting down", c.id)
		}
	}
}

// topology is the role information derived from a configuration.
type topology struct {
	role    role
	source  string
	targets map[string]bool
}

func topologyOf(cfg *commonpb.ReplicateConfiguration, self string) topology {
	t := topology{role: rolePrimary, targets: map[string]bool{}}
	for _, e := range cfg.GetCrossClusterTopology() {
		if e.GetTargetClusterId() == self {
			t.role = roleSecondary
			t.source = e.GetSourceClusterId()
		}
		if e.GetSourceClusterId() == self {
			t.targets[e.GetTargetClusterId()] = true
		}
	}
	return t
}

func clusterOf(cfg *commonpb.ReplicateConfiguration, id string) *commonpb.MilvusCluster {
	for _, mc := range cfg.GetClusters() {
		if mc.GetClusterId() == id {
			return mc
		}
	}
	return nil
}

// pendingConfig is a configuration message whose copies reached every
// pchannel.
type pendingConfig struct {
	cfg   *commonpb.ReplicateConfiguration
	force bool
	ts    uint64
	ids   []int64 // local id of the message on each pchannel
	extra map[string]string
}

// applyConfig makes a configuration current. live is false while replaying
// the WAL on Start (replicators are started afterwards).
func (c *Cluster) applyConfig(pc *pendingConfig, live bool) {
	r := &c.repl
	r.mu.Lock()
	old := topologyOf(r.cfg, c.id)
	oldRole := role(c.role.Load())
	now := topologyOf(pc.cfg, c.id)
	if len(pc.cfg.GetClusters()) == 0 {
		now = topology{role: rolePrimary, targets: map[string]bool{}}
	}
	for t := range now.targets {
		if !old.targets[t] || oldRole == roleSecondary {
			r.startPos[t] = append([]int64(nil), pc.ids...)
			delete(r.removedAt, t)
		}
	}
	for t := range old.targets {
		if !now.targets[t] {
			r.removedAt[t] = append([]int64(nil), pc.ids...)
		}
	}
	if pc.force {
		for k, v := range pc.extra {
			if !strings.HasPrefix(k, propSalvage) {
				continue
			}
			p, err := strconv.Atoi(strings.TrimPrefix(k, propSalvage))
			if err != nil || p < 0 || p >= len(c.wals) {
				continue
			}
			if sc := parseSalvage(v); sc != nil {
				r.salvage[p] = sc
			}
		}
	}
	r.cfg = pc.cfg
	r.source = now.source
	r.targets = now.targets
	c.role.Store(int32(now.role))
	close(r.changed)
	r.changed = make(chan struct{})
	var stopInbound []*inboundStream
	if now.role != roleSecondary {
		for _, in := range r.inbound {
			stopInbound = append(stopInbound, in)
		}
	}
	r.mu.Unlock()
	for _, in := range stopInbound {
		in.cancel(errReplicateViolation("cluster %s became primary", c.id))
	}
	if live {
		for t := range now.targets {
			c.ensureReplicator(t)
		}
		c.log.Info("replicate configuration applied", "role", c.Role(), "source", now.source, "targets", keys(now.targets), "force", pc.force)
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func formatSalvage(ck *commonpb.ReplicateCheckpoint) string {
	id := ""
	if ck.GetMessageId() != nil {
		id = ck.GetMessageId().GetId()
	}
	return strings.Join([]string{ck.GetClusterId(), ck.GetPchannel(), id, strconv.FormatUint(ck.GetTimeTick(), 10)}, "|")
}

func parseSalvage(s string) *commonpb.ReplicateCheckpoint {
	parts := strings.Split(s, "|")
	if len(parts) != 4 {
		return nil
	}
	tt, _ := strconv.ParseUint(parts[3], 10, 64)
	ck := &commonpb.ReplicateCheckpoint{ClusterId: parts[0], Pchannel: parts[1], TimeTick: tt}
	if parts[2] != "" {
		ck.MessageId = &commonpb.MessageID{Id: parts[2], WALName: commonpb.WALName_Test}
	}
	return ck
}

// validateConfig checks a configuration the way Milvus's replicate
// configuration validator does (the parts that matter here).
func (c *Cluster) validateConfig(cfg *commonpb.ReplicateConfiguration) error {
	if len(cfg.GetClusters()) == 0 {
		if len(cfg.GetCrossClusterTopology()) > 0 {
			return errParam("replicate configuration has a topology but no clusters")
		}
		return nil
	}
	ids := map[string]*commonpb.MilvusCluster{}
	for _, mc := range cfg.GetClusters() {
		if mc.GetClusterId() == "" {
			return errParam("replicate configuration: cluster id must not be empty")
		}
		if ids[mc.GetClusterId()] != nil {
			return errParam("replicate configuration: duplicated cluster id %s", mc.GetClusterId())
		}
		ids[mc.GetClusterId()] = mc
		if len(mc.GetPchannels()) != len(c.pchannels) {
			return errParam("replicate configuration: cluster %s has %d pchannels, cluster %s has %d; every cluster must have the same number",
				mc.GetClusterId(), len(mc.GetPchannels()), c.id, len(c.pchannels))
		}
		if mc.GetConnectionParam().GetUri() == "" {
			return errParam("replicate configuration: cluster %s has no connection uri", mc.GetClusterId())
		}
	}
	self := ids[c.id]
	if self == nil {
		return errParam("replicate configuration does not contain the current cluster %s", c.id)
	}
	for i, p := range self.GetPchannels() {
		if p != c.pchannels[i] {
			return errParam("replicate configuration: pchannel %d of cluster %s is %q, the cluster's pchannel is %q", i, c.id, p, c.pchannels[i])
		}
	}
	source := ""
	targets := map[string]bool{}
	for _, e := range cfg.GetCrossClusterTopology() {
		s, t := e.GetSourceClusterId(), e.GetTargetClusterId()
		if ids[s] == nil || ids[t] == nil {
			return errParam("replicate configuration: topology edge %s->%s names a cluster not in the configuration", s, t)
		}
		if s == t {
			return errParam("replicate configuration: topology edge %s->%s is a self loop", s, t)
		}
		if source != "" && s != source {
			return errParam("replicate configuration: only a star topology with one source is supported, got sources %s and %s", source, s)
		}
		source = s
		if targets[t] {
			return errParam("replicate configuration: duplicated topology edge %s->%s", s, t)
		}
		targets[t] = true
	}
	if targets[source] {
		return errParam("replicate configuration: source cluster %s cannot also be a target", source)
	}
	if len(ids) > 1 {
		for id := range ids {
			if id != source && !targets[id] {
				return errParam("replicate configuration: cluster %s is not connected by the topology", id)
			}
		}
	}
	if cur := c.repl.config(); cur != nil {
		for _, mc := range cur.GetClusters() {
			if nc := ids[mc.GetClusterId()]; nc != nil && strings.Join(nc.GetPchannels(), ",") != strings.Join(mc.GetPchannels(), ",") {
				return errParam("replicate configuration: the pchannels of cluster %s cannot change", mc.GetClusterId())
			}
		}
	}
	return nil
}

// updateReplicateConfiguration implements UpdateReplicateConfiguration.
func (c *Cluster) updateReplicateConfiguration(ctx context.Context, req *milvuspb.UpdateReplicateConfigurationRequest) error {
	cfg := req.GetReplicateConfiguration()
	if cfg == nil {
		cfg = &commonpb.ReplicateConfiguration{}
	}
	if req.GetForcePromote() {
		return c.forcePromote(cfg)
	}
	if err := c.validateConfig(cfg); err != nil {
		return err
	}
	waitOnly := false
	for {
		c.repl.mu.Lock()
		same := c.repl.cfg != nil && proto.Equal(c.repl.cfg, cfg) || c.repl.cfg == nil && len(cfg.GetClusters()) == 0
		changed := c.repl.changed
		c.repl.mu.Unlock()
		if same {
			return nil
		}
		if waitOnly || role(c.role.Load()) == roleSecondary {
			// Milvus: a secondary cannot broadcast; it answers once the
			// primary's configuration message has reached it through CDC
			// (waitUntilPrimaryChangeOrConfigurationSame). It keeps waiting
			// for that configuration even if the cluster turns primary
			// meanwhile: it never broadcasts a configuration it was only
			// to wait for, which by then may be an old one.
			waitOnly = true
			select {
			case <-changed:
				continue
			case <-ctx.Done():
				return fmt.Errorf("waiting for the replicate configuration to arrive from the primary: %w", ctx.Err())
			case <-c.ctx.Done():
				return newErr(codeServiceUnavailable, "cluster %s is shutting down", c.id)
			}
		}
		done, err := c.broadcastConfig(cfg)
		if done || err != nil {
			return err
		}
	}
}

// broadcastConfig writes cfg to every pchannel of a primary and applies it.
// It reports false when the cluster turned secondary meanwhile.
func (c *Cluster) broadcastConfig(cfg *commonpb.ReplicateConfiguration) (bool, error) {
	c.ddlMu.Lock()
	defer c.ddlMu.Unlock()
	if role(c.role.Load()) == roleSecondary {
		return false, nil
	}
	if cur := c.repl.config(); cur != nil && proto.Equal(cur, cfg) {
		return true, nil
	}
	payload, err := proto.Marshal(&milvuspb.UpdateReplicateConfigurationRequest{ReplicateConfiguration: cfg})
	if err != nil {
		return true, err
	}
	_, err = c.broadcastLocked(kindAlterReplicaConfig, payload, nil, nil)
	return true, err
}

// forcePromote turns a secondary into a standalone primary at once, recording
// per pchannel the checkpoint it had reached (the salvage checkpoint). As in
// Milvus, the request is validated before the "same configuration" no-op:
// the current multi-cluster configuration sent with force_promote is
// refused, not ignored.
func (c *Cluster) forcePromote(cfg *commonpb.ReplicateConfiguration) error {
	c.ddlMu.Lock()
	defer c.ddlMu.Unlock()
	if role(c.role.Load()) != roleSecondary {
		return errStreamingInvalidArgument("force promote can only be used on secondary clusters, current cluster %s is primary", c.id)
	}
	if c.opts.ForcePromoteShape == ForcePromoteEmpty {
		if len(cfg.GetClusters()) != 0 || len(cfg.GetCrossClusterTopology()) != 0 {
			return errStreamingInvalidArgument("force promote requires empty cluster and topology fields, got %d clusters and %d topology edges",
				len(cfg.GetClusters()), len(cfg.GetCrossClusterTopology()))
		}
		var self *commonpb.MilvusCluster
		for _, mc := range c.repl.config().GetClusters() {
			if mc.GetClusterId() == c.id {
				self = proto.Clone(mc).(*commonpb.MilvusCluster)
			}
		}
		if self == nil {
			return errStreamingInvalidArgument("force promote: cluster %s has no entry in its own replicate configuration", c.id)
		}
		cfg = &commonpb.ReplicateConfiguration{Clusters: []*commonpb.MilvusCluster{self}}
	}
	if len(cfg.GetClusters()) != 1 {
		return errStreamingInvalidArgument("force promote requires configuration with exactly one cluster (current cluster only), got %d clusters", len(cfg.GetClusters()))
	}
	if id := cfg.GetClusters()[0].GetClusterId(); id != c.id {
		return errStreamingInvalidArgument("force promote requires configuration with only current cluster %s, got cluster %s", c.id, id)
	}
	if n := len(cfg.GetCrossClusterTopology()); n > 0 {
		return errStreamingInvalidArgument("force promote requires configuration with no topology (single primary cluster), the topology must be empty, got %d topology edges", n)
	}
	if cur := c.repl.config(); cur != nil && proto.Equal(cur, cfg) {
		return nil
	}
	if err := c.validateConfig(cfg); err != nil {
		return err
	}
	// Stop receiving: nothing from the old primary may land after the
	// salvage checkpoints are taken.
	c.repl.mu.Lock()
	source := c.repl.source
	var streams []*inboundStream
	for _, in := range c.repl.inbound {
		streams = append(streams, in)
	}
	c.repl.mu.Unlock()
	for _, in := range streams {
		in.cancel(errReplicateViolation("cluster %s is being force promoted", c.id))
		<-in.done
	}
	payload, err := proto.Marshal(&milvuspb.UpdateReplicateConfigurationRequest{ReplicateConfiguration: cfg, ForcePromote: true})
	if err != nil {
		return err
	}
	// The salvage checkpoints are read with every pchannel locked, in the
	// same critical section that flips the role.
	salvage := func(extra map[string]string) {
		for p := range c.wals {
			if ck, ok := c.repl.checkpoint(source, p); ok {
				extra[propSalvage+strconv.Itoa(p)] = formatSalvage(ck.proto(source))
			}
		}
	}
	if _, err := c.broadcastLocked(kindAlterReplicaConfig, payload, nil, salvage); err != nil {
		return err
	}
	c.forcePromotions.Add(1)
	c.log.Warn("force promoted to standalone primary", "old_source", source)
	return nil
}

// broadcastLocked appends one message to every pchannel with a single
// timestamp and applies it. The caller holds ddlMu exclusively. addProps, if
// set, adds properties while every pchannel is locked.
func (c *Cluster) broadcastLocked(kind string, payload []byte, props map[string]string, addProps func(map[string]string)) (uint64, error) {
	for _, w := range c.wals {
		w.mu.Lock()
	}
	defer func() {
		for _, w := range c.wals {
			w.mu.Unlock()
		}
	}()
	if c.stopped() {
		return 0, newErr(codeServiceUnavailable, "cluster %s is shutting down", c.id)
	}
	extra := map[string]string{propBroadcast: "1"}
	for k, v := range props {
		extra[k] = v
	}
	if addProps != nil {
		addProps(extra)
	}
	ts := c.tso.alloc()
	var pending *pendingConfig
	for p, w := range c.wals {
		e := &entry{ts: ts, kind: kind, payload: payload, extra: extra}
		if err := w.appendLocked(e); err != nil {
			return 0, newErr(codeServiceInternal, "%v", err)
		}
		if pc := c.apply(p, e); pc != nil {
			pending = pc
		}
		w.advance(ts)
	}
	if pending != nil {
		// Applied while every pchannel is still locked: no time tick and no
		// write can slip in after the configuration message of a demoted
		// primary.
		c.applyConfig(pending, true)
	}
	return ts, nil
}

// getReplicateInfo implements GetReplicateInfo.
func (c *Cluster) getReplicateInfo(req *milvuspb.GetReplicateInfoRequest) (*milvuspb.GetReplicateInfoResponse, error) {
	p := -1
	for i, name := range c.pchannels {
		if name == req.GetTargetPchannel() {
			p = i
		}
	}
	if p < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "pchannel %q is not a pchannel of cluster %s", req.GetTargetPchannel(), c.id)
	}
	src := req.GetSourceClusterId()
	r := &c.repl
	r.mu.Lock()
	defer r.mu.Unlock()
	resp := &milvuspb.GetReplicateInfoResponse{}
	if sc := r.salvage[p]; sc != nil {
		resp.SalvageCheckpoint = proto.Clone(sc).(*commonpb.ReplicateCheckpoint)
	}
	if ck, ok := r.ckpts[ckptKey{src, p}]; ok {
		resp.Checkpoint = ck.proto(src)
		return resp, nil
	}
	if mc := clusterOf(r.cfg, src); mc != nil && src != c.id && role(c.role.Load()) == roleSecondary {
		// Configured, nothing replicated yet.
		resp.Checkpoint = &commonpb.ReplicateCheckpoint{ClusterId: src, Pchannel: mc.GetPchannels()[p]}
		return resp, nil
	}
	return nil, status.Errorf(codes.FailedPrecondition, "code: STREAMING_CODE_REPLICATE_VIOLATION, cause: cluster %s has no replicate checkpoint from cluster %s (not a secondary of it in the replicating topology)", c.id, src)
}

// inbound replication (target side)

type inboundStream struct {
	key    ckptKey
	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{}
}

type received struct {
	msg     *milvuspb.ReplicateMessage
	arrival time.Time
}

// serveReplicateStream is the target side of CreateReplicateStream: it
// receives one source pchannel's WAL messages in order, holds each for the
// configured replication delay (and while paused), appends it to the local
// WAL with the source's timestamp, applies it, and confirms its time tick.
func (c *Cluster) serveReplicateStream(stream milvuspb.MilvusService_CreateReplicateStreamServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	m := first.GetReplicateMessage()
	if m == nil || m.GetMessage() == nil {
		return status.Error(codes.InvalidArgument, "replicate stream: the first request carries no message")
	}
	src := m.GetSourceClusterId()
	p, err := c.inboundChannel(src, m.GetMessage().GetProperties()[propPChannel])
	if err != nil {
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	ctx, cancel := context.WithCancelCause(stream.Context())
	stopOnShutdown := context.AfterFunc(c.ctx, func() { cancel(errors.New("cluster stopped")) })
	defer stopOnShutdown()
	in := &inboundStream{key: ckptKey{src, p}, ctx: ctx, cancel: cancel, done: make(chan struct{})}
	defer close(in.done)
	defer cancel(nil)
	c.registerInbound(in)
	defer c.unregisterInbound(in)
	c.inboundStreams.Add(1)

	queue := make(chan received, 256)
	go func() {
		defer close(queue)
		next := first
		for {
			select {
			case queue <- received{msg: next.GetReplicateMessage(), arrival: time.Now()}:
			case <-ctx.Done():
				return
			}
			var err error
			next, err = stream.Recv()
			if err != nil {
				cancel(err)
				return
			}
		}
	}()
	var group []*milvuspb.ReplicateMessage
	for {
		var q received
		var ok bool
		select {
		case q, ok = <-queue:
		case <-ctx.Done():
			return streamEnd(ctx)
		}
		if !ok {
			return streamEnd(ctx)
		}
		if err := c.holdIncoming(ctx, q.arrival); err != nil {
			return streamEnd(ctx)
		}
		group = append(group, q.msg)
		if q.msg.GetMessage().GetProperties()[propGroupNext] == "1" {
			// The group is appended, applied and confirmed with its last
			// message (Milvus confirms a transaction at its commit).
			if len(group) > maxGroup {
				return status.Error(codes.FailedPrecondition, errReplicateViolation("replicate stream from %s: a message group longer than %d", src, maxGroup).Error())
			}
			continue
		}
		ts, pc, err := c.applyReplicated(p, group)
		group = nil
		if err != nil {
			return status.Error(codes.FailedPrecondition, err.Error())
		}
		if err := stream.Send(&milvuspb.ReplicateResponse{Response: &milvuspb.ReplicateResponse_ReplicateConfirmedMessageInfo{
			ReplicateConfirmedMessageInfo: &milvuspb.ReplicateConfirmedMessageInfo{ConfirmedTimeTick: ts}}}); err != nil {
			return err
		}
		if pc != nil {
			c.applyConfig(pc, true)
		}
	}
}

func streamEnd(ctx context.Context) error {
	cause := context.Cause(ctx)
	if cause == nil || errors.Is(cause, context.Canceled) {
		return status.Error(codes.Canceled, "replicate stream closed")
	}
	if _, ok := status.FromError(cause); ok {
		return cause
	}
	var me *milvusError
	if errors.As(cause, &me) {
		return status.Error(codes.FailedPrecondition, me.reason)
	}
	return status.Error(codes.Unavailable, cause.Error())
}

// holdIncoming waits until a message that arrived at arrival may be applied:
// the replication delay has passed and replication is not paused.
func (c *Cluster) holdIncoming(ctx context.Context, arrival time.Time) error {
	for {
		paused, delay, wake, drop := c.faults.get()
		wait := time.Until(arrival.Add(delay))
		if !paused && wait <= 0 {
			return nil
		}
		var t *time.Timer
		var timer <-chan time.Time
		if !paused {
			t = time.NewTimer(wait)
			timer = t.C
		}
		select {
		case <-timer:
		case <-wake:
		case <-drop:
		case <-ctx.Done():
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// inboundChannel checks that c accepts replication from src and maps the
// source pchannel onto the local one with the same index.
func (c *Cluster) inboundChannel(src, srcPch string) (int, error) {
	c.repl.mu.Lock()
	defer c.repl.mu.Unlock()
	if role(c.role.Load()) != roleSecondary {
		return 0, errReplicateViolation("primary cluster cannot receive replicate message (cluster %s)", c.id)
	}
	mc := clusterOf(c.repl.cfg, src)
	if mc == nil || src == c.id {
		return 0, errReplicateViolation("source cluster %s not found in replicate configuration of cluster %s", src, c.id)
	}
	for i, name := range mc.GetPchannels() {
		if name == srcPch {
			return i, nil
		}
	}
	return 0, errReplicateViolation("pchannel %q is not a pchannel of source cluster %s", srcPch, src)
}

func (c *Cluster) registerInbound(in *inboundStream) {
	c.repl.mu.Lock()
	prev := c.repl.inbound[in.key]
	c.repl.inbound[in.key] = in
	c.repl.mu.Unlock()
	if prev != nil {
		// A reconnecting source replaces its old stream; the old one must be
		// gone before the new one applies anything.
		prev.cancel(errors.New("replaced by a new replicate stream"))
		<-prev.done
	}
	c.faults.mu.Lock()
	drop := c.faults.dropCh
	c.faults.mu.Unlock()
	go func() {
		select {
		case <-drop:
			in.cancel(status.Error(codes.Unavailable, "replicate stream dropped (fault injection)"))
		case <-in.ctx.Done():
		}
	}()
}

func (c *Cluster) unregisterInbound(in *inboundStream) {
	c.repl.mu.Lock()
	if c.repl.inbound[in.key] == in {
		delete(c.repl.inbound, in.key)
	}
	c.repl.mu.Unlock()
}

// maxGroup bounds the messages of one group a replicate stream may send.
const maxGroup = 1024

// applyReplicated appends replicated messages (one, or one group that takes
// effect whole) to local pchannel p and applies them. Messages at or below
// the checkpoint are duplicates of a resent stream and are skipped; a gap
// is a violation.
func (c *Cluster) applyReplicated(p int, msgs []*milvuspb.ReplicateMessage) (uint64, *pendingConfig, error) {
	es := make([]*entry, len(msgs))
	for i, m := range msgs {
		e, err := entryFromImmutable(m.GetMessage())
		if err != nil {
			return 0, nil, errReplicateViolation("malformed replicate message: %v", err)
		}
		if i > 0 && e.id != es[0].id+int64(i) {
			return 0, nil, errReplicateViolation("replicate stream has a gap inside a message group: expected message %d, got %d", es[0].id+int64(i), e.id)
		}
		es[i] = e
	}
	e, last := es[0], es[len(es)-1]
	m := msgs[0]
	src := m.GetSourceClusterId()
	w := c.wals[p]
	w.mu.Lock()
	defer w.mu.Unlock()
	if role(c.role.Load()) != roleSecondary {
		return 0, nil, errReplicateViolation("primary cluster cannot receive replicate message (cluster %s)", c.id)
	}
	c.repl.mu.Lock()
	cur := c.repl.pchSource[p]
	_, curLive := c.repl.inbound[ckptKey{cur, p}]
	curCk, curHas := c.repl.ckpts[ckptKey{cur, p}]
	c.repl.mu.Unlock()
	fromSource := src == cur
	if !fromSource {
		if e.kind != kindAlterReplicaConfig || len(es) != 1 {
			return 0, nil, errReplicateViolation("cluster id mismatch, current: %s, expected: %s (pchannel %s of cluster %s replicates from %s)",
				src, cur, c.pchannels[p], c.id, cur)
		}
		if cur != "" && curLive {
			return 0, nil, errReplicateViolation("pchannel %s of cluster %s still replicates from %s; %s must wait for the configuration message that hands it over",
				c.pchannels[p], c.id, cur, src)
		}
		if curHas && e.ts <= curCk.ts {
			// Older than what this pchannel has: Milvus's CDC never sends
			// it (it reads from past the target's checkpoint time tick).
			return curCk.ts, nil, nil
		}
	}
	// A checkpoint of a cluster that is not the source is from an earlier
	// epoch: it neither deduplicates nor orders this configuration message.
	if ck, ok := c.repl.checkpoint(src, p); ok && fromSource {
		switch {
		case ck.msgID == 0:
			// Nothing from this source since the configuration message
			// that made it the source (ck.ts): anything not newer is from
			// an earlier epoch, resent from a stale checkpoint, and is
			// skipped as Milvus's CDC skips it.
			if last.ts <= ck.ts {
				return ck.ts, nil, nil
			}
		case last.id <= ck.msgID:
			return ck.ts, nil, nil
		case e.id != ck.msgID+1:
			return 0, nil, errReplicateViolation("replicate stream from %s has a gap on %s: expected message %d, got %d", src, m.GetMessage().GetProperties()[propPChannel], ck.msgID+1, e.id)
		}
	}
	locals := make([]*entry, len(es))
	for i, e := range es {
		locals[i] = &entry{ts: e.ts, kind: e.kind, payload: e.payload, extra: e.extra,
			src: src, srcID: e.id, srcPch: msgs[i].GetMessage().GetProperties()[propPChannel]}
	}
	if err := w.appendLocked(locals...); err != nil {
		return 0, nil, err
	}
	pc := c.applyGroup(p, locals)
	w.advance(last.ts)
	return last.ts, pc, nil
}

// dumpMessages implements DumpMessages: the Insert, Delete and DDL messages
// of a pchannel from start_message_id (inclusive), optionally filtered by
// time tick; without end_timetick it follows the WAL until cancelled.
func (c *Cluster) dumpMessages(req *milvuspb.DumpMessagesRequest, stream milvuspb.MilvusService_DumpMessagesServer) error {
	p := -1
	for i, name := range c.pchannels {
		if name == req.GetPchannel() {
			p = i
		}
	}
	if p < 0 {
		return status.Errorf(codes.InvalidArgument, "pchannel %q is not a pchannel of cluster %s", req.GetPchannel(), c.id)
	}
	start, err := parseMessageID(req.GetStartMessageId())
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "start_message_id: %v", err)
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	stop := context.AfterFunc(c.ctx, cancel)
	defer stop()
	w := c.wals[p]
	for id := start; ; id++ {
		e, err := w.wait(ctx, id)
		if err != nil {
			if stream.Context().Err() != nil {
				return stream.Context().Err()
			}
			return status.Error(codes.Unavailable, "cluster is shutting down")
		}
		if req.GetEndTimetick() > 0 && e.ts > req.GetEndTimetick() {
			return nil
		}
		if e.kind == kindTimeTick || e.kind == kindAlterReplicaConfig || e.ts < req.GetStartTimetick() {
			continue
		}
		if err := stream.Send(&milvuspb.DumpMessagesResponse{Response: &milvuspb.DumpMessagesResponse_Message{Message: e.immutable(w.name)}}); err != nil {
			return err
		}
	}
}
