package proxy

import (
	"bytes"
	"testing"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// TestEveryMethodHasAClass walks the pinned MilvusService, both as gRPC
// registers it and as the proto registry describes it, and fails for any
// method the proxy has no rule for: a go-api upgrade cannot silently add
// one the proxy would mishandle.
func TestEveryMethodHasAClass(t *testing.T) {
	names := map[string]bool{}
	for _, m := range milvuspb.MilvusService_ServiceDesc.Methods {
		names[m.MethodName] = false
	}
	for _, s := range milvuspb.MilvusService_ServiceDesc.Streams {
		names[s.StreamName] = true
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(milvusServiceName))
	if err != nil {
		t.Fatal(err)
	}
	sd := d.(protoreflect.ServiceDescriptor)
	if sd.Methods().Len() != len(names) {
		t.Fatalf("descriptor has %d methods, ServiceDesc %d", sd.Methods().Len(), len(names))
	}
	for i := 0; i < sd.Methods().Len(); i++ {
		md := sd.Methods().Get(i)
		name := string(md.Name())
		stream, ok := names[name]
		if !ok {
			t.Errorf("%s: in the descriptor, not in the ServiceDesc", name)
		}
		if stream != (md.IsStreamingClient() || md.IsStreamingServer()) {
			t.Errorf("%s: streaming mismatch", name)
		}
		r, ok := ruleFor(name)
		if !ok || r.class == ClassUnknown {
			t.Errorf("%s has no class: add it to ruleFor", name)
		}
	}

	// The server's table covers everything, in both gRPC registrations.
	methods, err := buildMethods()
	if err != nil {
		t.Fatal(err)
	}
	if len(methods) != len(names) {
		t.Fatalf("method table has %d entries, service %d", len(methods), len(names))
	}
	counts := map[Class]int{}
	for _, m := range methods {
		if !m.classified {
			t.Errorf("%s unclassified in the table", m.name)
		}
		counts[m.class]++
	}
	t.Logf("%d methods: %v", len(methods), counts)
}

func TestClassesOfKeyMethods(t *testing.T) {
	want := map[string]Class{
		"Search": ClassRead, "HybridSearch": ClassRead, "Query": ClassRead,
		"DescribeCollection": ClassMetaRead, "HasCollection": ClassMetaRead, "ShowCollections": ClassMetaRead,
		"Insert": ClassWrite, "Upsert": ClassWrite, "Delete": ClassWrite,
		"CreateCollection": ClassDDL, "DropCollection": ClassDDL, "CreateIndex": ClassDDL, "CreateCredential": ClassDDL,
		"Connect": ClassLeader, "AllocTimestamp": ClassLeader, "GetLoadState": ClassLeader,
		"UpdateReplicateConfiguration": ClassLeader, "CreateReplicateStream": ClassLeader, "DumpMessages": ClassLeader,
		"CheckHealth": ClassLocal,
	}
	for name, class := range want {
		r, ok := ruleFor(name)
		if !ok || r.class != class {
			t.Errorf("%s: class %v, want %v", name, r.class, class)
		}
	}
	for name, idem := range map[string]bool{"Insert": false, "Upsert": true, "Delete": true, "CreateCollection": false, "Search": true} {
		if r, _ := ruleFor(name); r.idempotent != idem {
			t.Errorf("%s: idempotent %v, want %v", name, r.idempotent, idem)
		}
	}
}

// TestLayouts checks the field numbers taken from the descriptors against
// milvus.proto as pinned (milvus.pb.go struct tags).
func TestLayouts(t *testing.T) {
	methods, err := buildMethods()
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]*method{}
	for _, m := range methods {
		by[m.name] = m
	}
	tests := []struct {
		name string
		got  layout
		want layout
	}{
		{"Search", by["Search"].layout, layout{db: 2, coll: 3, params: 9, level: 14, guarantee: 11, useDefault: 15, statusField: 1}},
		{"HybridSearch", by["HybridSearch"].layout, layout{db: 2, coll: 3, level: 11, guarantee: 8, useDefault: 12, statusField: 1}},
		{"Query", by["Query"].layout, layout{db: 2, coll: 3, params: 9, level: 11, guarantee: 8, useDefault: 12, statusField: 1}},
		{"Insert", by["Insert"].layout, layout{db: 2, coll: 3, statusField: 1, tsField: 9}},
		{"Delete", by["Delete"].layout, layout{db: 2, coll: 3, statusField: 1, tsField: 9}},
		{"CreateCollection", by["CreateCollection"].layout, layout{db: 2, coll: 3, names: [4]protowire.Number{3}, statusField: statusIsMessage}},
		{"DescribeCollection", by["DescribeCollection"].layout, layout{db: 2, coll: 3, statusField: 1}},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s: layout %+v, want %+v", tc.name, tc.got, tc.want)
		}
	}
	if l := by["RenameCollection"].layout; !l.isNameField(3) || !l.isNameField(4) {
		t.Errorf("RenameCollection names: %+v", l.names)
	}
	if l := by["CreateAlias"].layout; !l.isNameField(3) || !l.isNameField(4) {
		t.Errorf("CreateAlias names: %+v", l.names)
	}
}

// TestRewriteByAppending checks that appended fields override the original
// ones for a proto decoder while every other byte stays as it was.
func TestRewriteByAppending(t *testing.T) {
	methods, _ := buildMethods()
	var search *method
	for _, m := range methods {
		if m.name == "Search" {
			search = m
		}
	}
	orig := &milvuspb.SearchRequest{
		DbName: "db1", CollectionName: "coll", Dsl: "id > 0", Nq: 1,
		SearchInput:           &milvuspb.SearchRequest_PlaceholderGroup{PlaceholderGroup: bytes.Repeat([]byte{7}, 1<<20)},
		SearchParams:          []*commonpb.KeyValuePair{{Key: "topk", Value: "10"}, {Key: "iterator", Value: "True"}},
		GuaranteeTimestamp:    1,
		ConsistencyLevel:      commonpb.ConsistencyLevel_Session,
		UseDefaultConsistency: true,
	}
	b, err := proto.Marshal(orig)
	if err != nil {
		t.Fatal(err)
	}
	var f readFields
	if err := scanRequest(b, &search.layout, &f); err != nil {
		t.Fatal(err)
	}
	if string(f.db) != "db1" || string(f.coll) != "coll" || f.level != 1 || f.guarantee != 1 || !f.useDefault || !f.iterator {
		t.Fatalf("scan: %+v", f)
	}
	tail := appendConsistency(nil, &search.layout, int32(commonpb.ConsistencyLevel_Customized), 1<<40)
	var got milvuspb.SearchRequest
	if err := proto.Unmarshal(append(append([]byte(nil), b...), tail...), &got); err != nil {
		t.Fatal(err)
	}
	if got.GetConsistencyLevel() != commonpb.ConsistencyLevel_Customized || got.GetGuaranteeTimestamp() != 1<<40 || got.GetUseDefaultConsistency() {
		t.Fatalf("rewritten fields: level %v guarantee %d udc %v", got.GetConsistencyLevel(), got.GetGuaranteeTimestamp(), got.GetUseDefaultConsistency())
	}
	got.ConsistencyLevel, got.GuaranteeTimestamp, got.UseDefaultConsistency = orig.ConsistencyLevel, orig.GuaranteeTimestamp, orig.UseDefaultConsistency
	if !proto.Equal(&got, orig) {
		t.Fatal("other fields changed")
	}

	// Reading the fields of a 1 MiB Search allocates nothing: no decode.
	allocs := testing.AllocsPerRun(100, func() {
		var f readFields
		_ = scanRequest(b, &search.layout, &f)
		_ = appendConsistency(make([]byte, 0, 48)[:0], &search.layout, 4, 1<<40)
	})
	if allocs > 1 {
		t.Fatalf("scan+rewrite of a 1 MiB Search: %.0f allocs", allocs)
	}
}

func TestScanMalformed(t *testing.T) {
	methods, _ := buildMethods()
	var f readFields
	if err := scanRequest([]byte{0x0a, 0x10, 1}, &methods[0].layout, &f); err == nil {
		t.Fatal("truncated message accepted")
	}
}

func TestStatusResponse(t *testing.T) {
	methods, _ := buildMethods()
	for _, m := range methods {
		if m.name != "Insert" && m.name != "CreateCollection" {
			continue
		}
		b := appendStatusResponse(nil, &m.layout, 1, codeOutcomeUnknown, "why")
		st, _, ok := scanResponse(b, &m.layout)
		if !ok || st.code != codeOutcomeUnknown || st.errorCode != 1 {
			t.Errorf("%s: status %+v ok %v", m.name, st, ok)
		}
		if m.name == "Insert" {
			var r milvuspb.MutationResult
			if err := proto.Unmarshal(b, &r); err != nil || r.GetStatus().GetReason() != "why" || r.GetStatus().GetCode() != codeOutcomeUnknown {
				t.Errorf("Insert status response: %v %v", &r, err)
			}
		}
	}
}
