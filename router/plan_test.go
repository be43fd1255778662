package router

import (
	"reflect"
	"testing"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/consistency"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
)

func TestPlan(t *testing.T) {
	const (
		now   = 1_000_000          // leader clock, physical ms
		write = uint64(1)<<40 | 5  // a session's last write
		guar  = uint64(1)<<40 | 99 // a client's own guarantee, above write
		fresh = uint64(1)<<41 | 1  // a fresh leader timestamp
	)
	pcs := []int{1, 3}
	leader := ReadPolicy{Rules: consistency.Rules{BoundedStaleness: 5 * time.Second}, EventuallyMaxLag: 2 * time.Second}
	wait := leader
	wait.StrongWait = true
	known := func(level consistency.Level, g uint64) ReadInput {
		return ReadInput{Fields: consistency.ReadFields{Level: level, Guarantee: g}, CollectionKnown: true,
			CollectionLevel: consistency.Bounded, PChannels: pcs, LeaderNow: ts(now)}
	}
	with := func(in ReadInput, have Need, session, strong uint64) ReadInput {
		in.Have, in.Session, in.StrongTimestamp = have, session, strong
		return in
	}
	fwd := func(p ReadPlan) ReadPlan {
		p.Rewrite = true
		p.ForwardLevel, p.ForwardGuarantee = consistency.Forward(p.Required)
		return p
	}
	bounded := ts(now - 5000)
	tests := []struct {
		name   string
		policy ReadPolicy
		in     ReadInput
		want   ReadPlan
	}{
		{"metadata asks for the session", leader, ReadInput{Meta: true},
			ReadPlan{Need: NeedSession}},
		{"metadata is a Session read on the session's DDL and writes", leader, ReadInput{Meta: true, Have: NeedSession, Session: write},
			ReadPlan{Level: consistency.Session, Required: write, Request: ReadRequest{Required: write}}},
		{"metadata without any session write requires nothing", leader, ReadInput{Meta: true, Have: NeedSession},
			ReadPlan{Level: consistency.Session}},
		{"unknown collection: the leader, as sent", leader, ReadInput{Fields: consistency.ReadFields{Level: consistency.Eventually}},
			ReadPlan{Request: ReadRequest{Leader: ReasonLeaderNoCollection}}},
		{"Strong under strong_reads leader: the leader, as sent", leader, known(consistency.Strong, 0),
			ReadPlan{Level: consistency.Strong, Request: ReadRequest{PChannels: pcs, Strong: true}}},
		{"Strong under wait asks for a leader timestamp", wait, known(consistency.Strong, 0),
			ReadPlan{Need: NeedStrongTimestamp}},
		{"Strong under wait without a timestamp: the leader", wait, with(known(consistency.Strong, 0), NeedStrongTimestamp, 0, 0),
			ReadPlan{Level: consistency.Strong, Request: ReadRequest{Leader: ReasonLeaderStrongAlloc}}},
		{"Strong under wait requires the fresh timestamp and waits", wait, with(known(consistency.Strong, 0), NeedStrongTimestamp, 0, fresh),
			fwd(ReadPlan{Level: consistency.Strong, Required: fresh, WaitForAlternative: true, Request: ReadRequest{PChannels: pcs, Required: fresh}})},
		{"Session asks for the session", leader, known(consistency.Session, 0),
			ReadPlan{Need: NeedSession}},
		{"Session requires the session's write", leader, with(known(consistency.Session, 0), NeedSession, write, 0),
			fwd(ReadPlan{Level: consistency.Session, Required: write, Request: ReadRequest{PChannels: pcs, Required: write}})},
		{"Session requires the client's later guarantee", leader, with(known(consistency.Session, guar), NeedSession, write, 0),
			fwd(ReadPlan{Level: consistency.Session, Required: guar, Request: ReadRequest{PChannels: pcs, Required: guar}})},
		{"Session with nothing written: forwarded as Eventually", leader, with(known(consistency.Session, 0), NeedSession, 0, 0),
			fwd(ReadPlan{Level: consistency.Session, Request: ReadRequest{PChannels: pcs}})},
		{"default level is the collection's (Session here)", leader,
			ReadInput{Fields: consistency.ReadFields{UseDefault: true}, CollectionKnown: true, CollectionLevel: consistency.Session},
			ReadPlan{Need: NeedSession}},
		{"Bounded: leader now minus bounded_staleness", leader, known(consistency.Bounded, 0),
			fwd(ReadPlan{Level: consistency.Bounded, Required: bounded, Request: ReadRequest{PChannels: pcs, Required: bounded}})},
		{"default level Bounded", leader, ReadInput{Fields: consistency.ReadFields{UseDefault: true, Level: consistency.Strong},
			CollectionKnown: true, CollectionLevel: consistency.Bounded, LeaderNow: ts(now)},
			fwd(ReadPlan{Level: consistency.Bounded, Required: bounded, Request: ReadRequest{Required: bounded}})},
		{"Eventually: any replica within the lag cap", leader, known(consistency.Eventually, 0),
			fwd(ReadPlan{Level: consistency.Eventually, Request: ReadRequest{PChannels: pcs, Eventually: true, MaxLag: 2 * time.Second}})},
		{"Customized requires the client's guarantee", leader, known(consistency.Customized, guar),
			fwd(ReadPlan{Level: consistency.Customized, Required: guar, Request: ReadRequest{PChannels: pcs, Required: guar}})},
		{"Customized with a sentinel requires nothing", leader, known(consistency.Customized, consistency.GuaranteeBounded),
			fwd(ReadPlan{Level: consistency.Customized, Request: ReadRequest{PChannels: pcs}})},
		{"Strong carrying a guarantee is Milvus's guarantee-only request", leader, known(consistency.Strong, guar),
			fwd(ReadPlan{Level: consistency.Customized, Required: guar, Request: ReadRequest{PChannels: pcs, Required: guar}})},
		{"iterator page: pinned guarantee, forwarded as sent", leader,
			ReadInput{Fields: consistency.ReadFields{Level: consistency.Bounded, Guarantee: guar, Iterator: true}, CollectionKnown: true},
			ReadPlan{Level: consistency.Customized, Required: guar, Request: ReadRequest{Required: guar}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.policy.Plan(tc.in)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Plan(%+v)\n got %+v\nwant %+v", tc.in, got, tc.want)
			}
		})
	}
}

func TestPickReadLeaderReason(t *testing.T) {
	r := New(Options{Rand: fixedRand(0)})
	s := snap(cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative, cps(ts(10))))
	if d := r.PickRead(s, ReadRequest{Leader: ReasonLeaderNoCollection}); d.Cluster == nil || d.Cluster.ID != "a" || d.Reason != ReasonLeaderNoCollection {
		t.Errorf("leader reason: %+v", d)
	}
	// The leader failed: nothing else may serve a read the plan could not
	// place.
	if d := r.PickRead(s, ReadRequest{Leader: ReasonLeaderStrongAlloc, Exclude: []string{"a"}}); d.Cluster != nil || d.Reason != ReasonNone {
		t.Errorf("leader excluded: %+v", d)
	}
}

func TestAfterRefusal(t *testing.T) {
	a, b := cl("a", topology.RoleLeader), cl("b", topology.RoleAlternative)
	tests := []struct {
		name string
		snap *topology.Snapshot
		req  ReadRequest
		by   *topology.Cluster
		want string // "" for no cluster
	}{
		{"an alternative refuses: the leader", snap(a, b), ReadRequest{}, b, "a"},
		{"the leader refused: its answer stands", snap(a, b), ReadRequest{}, a, ""},
		{"no leader: the refusal stands", snap(b), ReadRequest{}, b, ""},
		{"leader already tried: the refusal stands", snap(a, b), ReadRequest{Exclude: []string{"a"}}, b, ""},
	}
	for _, tc := range tests {
		d := AfterRefusal(tc.snap, tc.req, tc.by)
		got := ""
		if d.Cluster != nil {
			got = d.Cluster.ID
			if d.Reason != ReasonLeaderFallback {
				t.Errorf("%s: reason %s", tc.name, d.Reason)
			}
		} else if d.Reason != ReasonNone {
			t.Errorf("%s: reason %s without a cluster", tc.name, d.Reason)
		}
		if got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
