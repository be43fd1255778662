// Package consistency holds the proxy's model of Milvus read consistency:
// the rules that turn a read's consistency fields into the replicated
// timestamp it requires (docs/architecture.md, "Consistency rules"), and the
// per-session record of the writes and DDL a client made through this proxy.
// Hybrid timestamps themselves are internal/hybridts.
//
// What the SDKs put in a read (guarantee_timestamp GT, consistency_level CL,
// use_default_consistency UDC on Search, HybridSearch and Query), checked in
// pymilvus 2.6 (client/prepare.py + client/ts_utils.py
// construct_guarantee_ts) and the Go SDK client/v2 v2.6.2
// (milvusclient/read_options.go, iterator_option.go, interceptors.go):
//
//	level asked   pymilvus                              Go client/v2
//	none          UDC=true, CL=0, GT=last write or 1    UDC=true, CL=Bounded, GT=0
//	Strong        CL=Strong, GT=0                       CL=Strong, GT=0
//	Session       CL=Session, GT=last write or 1        CL=Session, GT=0
//	Bounded       CL=Bounded, GT=2                      CL=Bounded, GT=0
//	Eventually    CL=Eventually, GT=1                   CL=Eventually, GT=0
//	Customized    CL=Customized, GT=caller's or 1       CL=Customized, GT=0
//	iterator page UDC=true, GT=first page's session_ts  (iterators: UDC/CL as above)
//
// pymilvus learns "last write" from MutationResult.timestamp; the Go SDK
// tracks nothing and sends the Connect identifier as the `identifier`
// metadata key on every call.
//
// Milvus itself (internal/proxy task_search.go / task_query.go /
// task_hybrid_search.go PreExecute, then parseGuaranteeTsFromConsistency and
// parseGuaranteeTs in util.go) reads those fields like this:
//
//	level := UDC ? collection's level : CL
//	if !UDC && CL == Strong && GT > 0: GT 2 -> Bounded, otherwise GT as is
//	Strong -> now; Bounded -> now - gracefulTime; Eventually -> 1
//	Session, Customized -> GT as is (so GT 0, 1 or 2 waits for nothing)
//	iterator pages with GT > 0: GT is both the guarantee and the MVCC ts
//
// Resolve mirrors exactly that, so the proxy never demands less than Milvus
// would and a forwarded request means to the backend what it meant to the
// client. Note that a Go SDK Session read (GT 0) waits for nothing on real
// Milvus; through the proxy it waits for this session's own writes, which
// is what Session promises.
package consistency
