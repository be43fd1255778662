package router

import (
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/consistency"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
)

// Reasons the read plan sends a read to the leader for, next to those of
// PickRead.
const (
	// ReasonLeaderNoCollection: the read names no collection, or its
	// facts (consistency level, pchannels) could not be looked up; the
	// leader answers it as sent.
	ReasonLeaderNoCollection Reason = "leader_no_collection"
	// ReasonLeaderStrongAlloc: a Strong read under strong_reads: wait whose
	// AllocTimestamp on the leader failed.
	ReasonLeaderStrongAlloc Reason = "leader_strong_alloc"
	// ReasonLeaderFallback: an alternative answered that it cannot serve
	// the read (AfterRefusal).
	ReasonLeaderFallback Reason = "leader_fallback"
)

// ReadPolicy is the read configuration a plan follows (config
// consistency.*).
type ReadPolicy struct {
	// Rules turn a demand into a required timestamp (bounded_staleness).
	Rules consistency.Rules
	// StrongWait: strong_reads: wait. A Strong read takes a fresh leader
	// timestamp and may be served by an alternative that reaches it;
	// otherwise Strong reads go to the leader unchanged.
	StrongWait bool
	// EventuallyMaxLag caps the lag of alternatives serving Eventually
	// reads (eventually_max_lag; 0: no cap).
	EventuallyMaxLag time.Duration
}

// Need names facts Plan asks for that cost the caller a look-up or a call.
type Need uint8

// Facts a plan may need.
const (
	// NeedSession: the session's last write to the collection (or DDL in
	// the database), from consistency.Tracker.Session.
	NeedSession Need = 1 << iota
	// NeedStrongTimestamp: a fresh timestamp from the leader
	// (AllocTimestamp); it blocks, and it may fail.
	NeedStrongTimestamp
)

// ReadInput is what is known about one read when it is planned.
type ReadInput struct {
	// Meta marks a metadata read (DescribeCollection, ShowCollections...):
	// no consistency fields; it must see the session's own DDL and
	// writes, so it is a Session read.
	Meta bool
	// Fields are the read's consistency fields as sent.
	Fields consistency.ReadFields
	// CollectionKnown: the collection's facts below were found. False
	// when the read names no collection or the look-up failed.
	CollectionKnown bool
	// CollectionLevel is the collection's own consistency level, used
	// when the read asks for the default.
	CollectionLevel consistency.Level
	// PChannels are the collection's leader pchannel indexes (nil: all).
	PChannels []int
	// LeaderNow is the leader's current timestamp (an estimate; 0:
	// unknown, the local clock stands in). Bounded reads use it.
	LeaderNow uint64

	// Have lists the needed facts filled in below.
	Have Need
	// Session is the session's last write or DDL timestamp (NeedSession).
	Session uint64
	// StrongTimestamp is the leader's fresh timestamp; 0 when the
	// AllocTimestamp failed (NeedStrongTimestamp).
	StrongTimestamp uint64
}

// ReadPlan is the decision about one read, bar the cluster: what it
// requires, what is forwarded, and how clusters are picked for it.
type ReadPlan struct {
	// Need, when not 0, lists facts to supply (ReadInput.Have) before
	// planning again; nothing else in the plan is set.
	Need Need
	// Level is the effective consistency level (metrics and traces).
	Level consistency.Level
	// Required is the replicated timestamp R the read needs (0: none).
	Required uint64
	// Rewrite: forward ForwardLevel and ForwardGuarantee in place of the
	// client's consistency fields; otherwise forward them as sent.
	Rewrite          bool
	ForwardLevel     consistency.Level
	ForwardGuarantee uint64
	// WaitForAlternative: while PickRead answers ReasonLeaderLag, wait up
	// to max_wait for an alternative to catch up (strong_reads: wait).
	WaitForAlternative bool
	// Request is what PickRead needs, for the first pick and every pick
	// after a failed attempt (the caller appends to Exclude).
	Request ReadRequest
}

// Plan decides what a read requires and how it is routed. It is pure: the
// same input always gives the same plan, and it reads nothing else. When
// it needs a fact that costs the caller something (the session's last
// write, a fresh leader timestamp), it returns only Need; the caller
// supplies the fact and plans again. Those facts are asked for only when
// the read's level needs them, so the common read plans once.
//
// The rules (docs/architecture.md, "Consistency rules"):
//
//	metadata     Session on the session's DDL and writes
//	no facts     the leader, as sent (ReasonLeaderNoCollection)
//	Strong       leader (strong_reads: leader), as sent; or R = a fresh
//	             leader timestamp and wait for an alternative (wait);
//	             the leader if the timestamp cannot be had
//	Session      R = max(client guarantee, session's last write)
//	Bounded      R = leader now - bounded_staleness
//	Eventually   R = 0, any replica, lag capped by eventually_max_lag
//	Customized   R = client guarantee
//	iterator     R = the pinned guarantee, forwarded as sent
func (p ReadPolicy) Plan(in ReadInput) ReadPlan {
	if in.Meta {
		if in.Have&NeedSession == 0 {
			return ReadPlan{Need: NeedSession}
		}
		return ReadPlan{Level: consistency.Session, Required: in.Session, Request: ReadRequest{Required: in.Session}}
	}
	if !in.CollectionKnown {
		return ReadPlan{Request: ReadRequest{Leader: ReasonLeaderNoCollection}}
	}
	d := consistency.Resolve(in.Fields, in.CollectionLevel)
	plan := ReadPlan{Level: d.Level, Request: ReadRequest{PChannels: in.PChannels}}
	rewrite := !d.Pinned
	switch d.Level {
	case consistency.Strong:
		if !p.StrongWait {
			// The leader resolves "now" itself: forward as sent.
			plan.Request.Strong = true
			return plan
		}
		if in.Have&NeedStrongTimestamp == 0 {
			return ReadPlan{Need: NeedStrongTimestamp}
		}
		if in.StrongTimestamp == 0 {
			return ReadPlan{Level: consistency.Strong, Request: ReadRequest{Leader: ReasonLeaderStrongAlloc}}
		}
		plan.Request.Required = in.StrongTimestamp
		plan.WaitForAlternative = true
	case consistency.Session:
		if in.Have&NeedSession == 0 {
			return ReadPlan{Need: NeedSession}
		}
		plan.Request.Required = p.Rules.Required(d, in.Session, 0)
	case consistency.Bounded:
		plan.Request.Required = p.Rules.Required(d, 0, in.LeaderNow)
	case consistency.Eventually:
		// Only Eventually accepts alternatives whose lag is unknown.
		plan.Request.Eventually = true
		plan.Request.MaxLag = p.EventuallyMaxLag
	default:
		plan.Request.Required = p.Rules.Required(d, 0, 0)
	}
	plan.Required = plan.Request.Required
	if rewrite {
		plan.Rewrite = true
		plan.ForwardLevel, plan.ForwardGuarantee = consistency.Forward(plan.Required)
	}
	return plan
}

// AfterRefusal decides where a read goes after cluster by (an alternative)
// answered that it cannot serve it (a collection, partition, index or
// database it has not caught up with, or not loaded): the leader, unless
// by is the leader, there is none, or it was already tried. A Decision
// without a cluster means the refusal is the answer.
func AfterRefusal(snap *topology.Snapshot, req ReadRequest, by *topology.Cluster) Decision {
	leader := snap.Leader
	if leader == nil || leader.ID == by.ID || excluded(req.Exclude, leader.ID) {
		return Decision{Reason: ReasonNone}
	}
	return Decision{Cluster: leader, Reason: ReasonLeaderFallback}
}
