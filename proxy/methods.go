package proxy

import (
	"fmt"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// Class says how the proxy handles a method.
type Class uint8

// Classes.
const (
	// ClassUnknown is a method the proxy has no rule for. Known methods
	// never have it (a test walks the service descriptor); unknown
	// methods are answered Unimplemented.
	ClassUnknown Class = iota
	// ClassRead: Search, HybridSearch, Query. The consistency fields
	// decide the required timestamp; routed to an alternative that covers
	// it, else the leader; rewritten to carry it.
	ClassRead
	// ClassMetaRead: reads of metadata (collections, partitions, aliases,
	// databases). Routed like a Session read that must cover the
	// session's last DDL in the database; forwarded unchanged.
	ClassMetaRead
	// ClassWrite: Insert, Upsert, Delete. The leader only; the
	// MutationResult timestamp is recorded for the session.
	ClassWrite
	// ClassDDL: schema, load, index, alias, database and RBAC changes.
	// The leader only; the session's DDL timestamp is recorded after
	// success and the collection cache invalidated where names change.
	ClassDDL
	// ClassLeader: everything else that must see the leader: Connect,
	// AllocTimestamp, progress and state polls of operations just issued
	// there, RBAC and admin reads, replication calls.
	ClassLeader
	// ClassLocal: answered by the proxy from its own view (CheckHealth).
	ClassLocal
)

var classNames = [...]string{"unknown", "read", "meta_read", "write", "ddl", "leader", "local"}

func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return fmt.Sprintf("class(%d)", c)
}

// rule is the hand-written part of a method's entry.
type rule struct {
	class Class
	// idempotent: resending after an ambiguous failure (sent, no answer)
	// cannot change the outcome. Reads are; Upsert and Delete are for
	// this purpose (the same rows end in the same state); Insert is not
	// (it would insert twice).
	idempotent bool
	// invalidate: the DDL changes what the collection cache holds.
	invalidate bool
}

// ruleFor classifies every method of milvus.proto.milvus.MilvusService.
// TestEveryMethodHasAClass fails when the pinned go-api gains a method this
// switch does not name.
func ruleFor(name string) (rule, bool) {
	switch name {
	case "Search", "HybridSearch", "Query":
		return rule{class: ClassRead, idempotent: true}, true

	case "HasCollection", "DescribeCollection", "BatchDescribeCollection",
		"GetCollectionStatistics", "ShowCollections", "HasPartition",
		"ShowPartitions", "GetPartitionStatistics", "DescribeAlias",
		"ListAliases", "ListDatabases", "DescribeDatabase", "RunAnalyzer":
		return rule{class: ClassMetaRead, idempotent: true}, true

	case "Insert":
		return rule{class: ClassWrite}, true
	case "Upsert", "Delete":
		return rule{class: ClassWrite, idempotent: true}, true

	case "CreateCollection", "DropCollection", "AlterCollection",
		"AlterCollectionField", "AddCollectionField", "AddCollectionFunction",
		"AlterCollectionFunction", "DropCollectionFunction",
		"TruncateCollection", "RenameCollection", "CreateAlias", "DropAlias",
		"AlterAlias", "DropDatabase":
		return rule{class: ClassDDL, invalidate: true}, true
	case "LoadCollection", "ReleaseCollection", "CreatePartition",
		"DropPartition", "LoadPartitions", "ReleasePartitions",
		"CreateIndex", "AlterIndex", "DropIndex", "CreateDatabase",
		"AlterDatabase",
		// RBAC changes replicate like DDL; a session that grants and
		// then reads must not meet an alternative that has not yet
		// seen the grant.
		"CreateCredential", "UpdateCredential", "DeleteCredential",
		"CreateRole", "DropRole", "OperateUserRole", "OperatePrivilege",
		"OperatePrivilegeV2", "RestoreRBAC", "CreatePrivilegeGroup",
		"DropPrivilegeGroup", "OperatePrivilegeGroup", "AddUserTags",
		"DeleteUserTags", "CreateRowPolicy", "DropRowPolicy":
		return rule{class: ClassDDL}, true

	case "CheckHealth":
		return rule{class: ClassLocal, idempotent: true}, true

	// Leader-only reads: state and progress of operations issued on the
	// leader, security and admin views, per-cluster internals.
	case "GetVersion", "Connect", "AllocTimestamp", "Dummy", "RegisterLink",
		"GetMetrics", "GetComponentStates", "GetLoadingProgress",
		"GetLoadState", "DescribeIndex", "GetIndexStatistics",
		"GetIndexState", "GetIndexBuildProgress", "GetFlushState",
		"GetFlushAllState", "GetPersistentSegmentInfo",
		"GetQuerySegmentInfo", "GetReplicas", "GetCompactionState",
		"GetCompactionStateWithPlans", "GetImportState", "ListImportTasks",
		"ListCredUsers", "SelectRole", "SelectUser", "SelectGrant",
		"ListResourceGroups", "DescribeResourceGroup", "ListIndexedSegment",
		"DescribeSegmentIndexData", "ListPrivilegeGroups", "BackupRBAC",
		"ListFileResources", "GetUserTags", "ListUsersWithTag",
		"ListRowPolicies", "GetReplicateConfiguration", "GetReplicateInfo",
		"CalcDistance", "DumpMessages",
		// Retrying either call is safe: Milvus answers a configuration it
		// already has as a no-op (the switchover protocol of its CDC docs).
		"UpdateReplicateConfiguration":
		return rule{class: ClassLeader, idempotent: true}, true

	// Leader-only operations with effects.
	case "Flush", "FlushAll", "LoadBalance", "ManualCompaction", "Import",
		"CreateResourceGroup", "DropResourceGroup", "UpdateResourceGroups",
		"TransferNode", "TransferReplica", "ReplicateMessage",
		"AddFileResource", "RemoveFileResource", "CreateReplicateStream":
		return rule{class: ClassLeader}, true
	}
	return rule{}, false
}

// statusIsMessage marks a response type that is commonpb.Status itself.
const statusIsMessage protowire.Number = -1

// layout holds the field numbers the proxy reads or writes, taken from the
// message descriptors so that they follow the pinned proto, not guesses.
// 0 means the message has no such field.
type layout struct {
	db, coll, params             protowire.Number
	collRepeated                 bool
	level, guarantee, useDefault protowire.Number
	names                        [4]protowire.Number // DDL name fields
	statusField, tsField         protowire.Number
}

func (l *layout) isNameField(n protowire.Number) bool {
	for _, x := range l.names {
		if x != 0 && x == n {
			return true
		}
	}
	return false
}

// method is one entry of the method table.
type method struct {
	rule
	name, full    string
	stream        bool
	clientStreams bool
	serverStreams bool
	classified    bool
	layout        layout
}

// milvusServiceName is the full name of the service the proxy speaks.
var milvusServiceName = milvuspb.MilvusService_ServiceDesc.ServiceName

// buildMethods returns the method table for every method of the pinned
// MilvusService, in descriptor order.
func buildMethods() ([]*method, error) {
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(milvusServiceName))
	if err != nil {
		return nil, fmt.Errorf("proxy: finding %s in the proto registry: %w", milvusServiceName, err)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, fmt.Errorf("proxy: %s is not a service", milvusServiceName)
	}
	streams := map[string]grpc.StreamDesc{}
	for _, s := range milvuspb.MilvusService_ServiceDesc.Streams {
		streams[s.StreamName] = s
	}
	var out []*method
	ms := sd.Methods()
	for i := 0; i < ms.Len(); i++ {
		md := ms.Get(i)
		name := string(md.Name())
		r, ok := ruleFor(name)
		m := &method{
			rule:          r,
			name:          name,
			full:          "/" + milvusServiceName + "/" + name,
			classified:    ok,
			clientStreams: md.IsStreamingClient(),
			serverStreams: md.IsStreamingServer(),
		}
		m.stream = m.clientStreams || m.serverStreams
		if !ok {
			// Not named by ruleFor: the safe default is the leader,
			// never retried. The descriptor test catches it first.
			m.class = ClassLeader
		}
		m.layout = layoutFor(md.Input(), md.Output(), m.class)
		out = append(out, m)
	}
	return out, nil
}

func layoutFor(in, outMsg protoreflect.MessageDescriptor, class Class) layout {
	var l layout
	num := func(md protoreflect.MessageDescriptor, name string, kinds ...protoreflect.Kind) protowire.Number {
		f := md.Fields().ByName(protoreflect.Name(name))
		if f == nil {
			return 0
		}
		for _, k := range kinds {
			if f.Kind() == k {
				return f.Number()
			}
		}
		return 0
	}
	l.db = num(in, "db_name", protoreflect.StringKind)
	l.coll = num(in, "collection_name", protoreflect.StringKind)
	if l.coll == 0 {
		l.coll = num(in, "collectionName", protoreflect.StringKind)
	}
	if l.coll != 0 {
		l.collRepeated = in.Fields().ByNumber(l.coll).IsList()
	}
	if class == ClassRead {
		l.level = num(in, "consistency_level", protoreflect.EnumKind)
		l.guarantee = num(in, "guarantee_timestamp", protoreflect.Uint64Kind)
		l.useDefault = num(in, "use_default_consistency", protoreflect.BoolKind)
		l.params = num(in, "search_params", protoreflect.MessageKind)
		if l.params == 0 {
			l.params = num(in, "query_params", protoreflect.MessageKind)
		}
	}
	if class == ClassDDL {
		k := 0
		for _, n := range []string{"collection_name", "alias", "oldName", "newName"} {
			if f := num(in, n, protoreflect.StringKind); f != 0 && !in.Fields().ByNumber(f).IsList() {
				l.names[k] = f
				k++
			}
		}
	}
	if outMsg.FullName() == "milvus.proto.common.Status" {
		l.statusField = statusIsMessage
	} else if f := outMsg.Fields().ByName("status"); f != nil && f.Kind() == protoreflect.MessageKind &&
		f.Message().FullName() == "milvus.proto.common.Status" {
		l.statusField = f.Number()
	}
	if class == ClassWrite && outMsg.FullName() == "milvus.proto.milvus.MutationResult" {
		l.tsField = num(outMsg, "timestamp", protoreflect.Uint64Kind)
	}
	return l
}
