// Package sim is an in-memory stand-in for a Milvus 2.6 cluster, faithful to
// the parts of Milvus the proxy depends on. It serves
// milvus.proto.milvus.MilvusService over gRPC: databases, collections,
// partitions, aliases, indexes, load state, Insert/Upsert/Delete, brute-force
// Search (L2, IP, COSINE) and Query with filter expressions, a hybrid-timestamp
// TSO, a write-ahead log per physical channel with periodic time ticks,
// guarantee-timestamp waits for every consistency level, and Milvus 2.6
// replication (CDC): UpdateReplicateConfiguration, GetReplicateConfiguration,
// GetReplicateInfo, CreateReplicateStream, force promotion with salvage
// checkpoints and DumpMessages.
//
// State is a fold over the WAL: every write and every DDL is a WAL message,
// applied to the in-memory catalog and data when appended (on a primary) or
// when received through replication (on a secondary). With Options.DataDir the
// WAL is written to disk and replayed on Start, so a killed process restarts
// with its data.
//
// WAL messages as they travel in CreateReplicateStream and DumpMessages:
//
//   - ImmutableMessage.id.id is the decimal sequence number of the message in
//     its pchannel's WAL (1, 2, 3, ...), WAL_name Test.
//   - properties: "_t" message type (Insert, Delete, TimeTick, CreateCollection,
//     AlterReplicateConfig, ...), "_tt" its hybrid timestamp (decimal),
//     "_pch" the pchannel it was written to, and for data and DDL "_db",
//     "_coll", "_cid" (database, collection name, collection id).
//   - "_grpnext" = "1" marks a message that takes effect together with the
//     next one on its pchannel: an upsert is a Delete and an Insert with one
//     timestamp, written, replicated (confirmed with its last message) and
//     made visible to reads as a unit, as Milvus 2.6 writes it in one
//     transaction. A checkpoint never falls inside such a group.
//   - payload: msgpb.InsertRequest / msgpb.DeleteRequest for data, the milvuspb
//     request (CreateCollectionRequest, CreateIndexRequest, ...) for DDL,
//     milvuspb.UpdateReplicateConfigurationRequest for AlterReplicateConfig,
//     empty for TimeTick.
//
// Behaviour worth knowing (each as Milvus does it):
//
//   - Replication starts at the configuration message that made a cluster a
//     target: data written before JoinReplication is not copied (Milvus CDC
//     replicates incrementally).
//   - Reads check that the collection exists and is loaded before they wait
//     for their guarantee timestamp, so a read on a target that races the
//     replicated CreateCollection/LoadCollection gets "collection not found"
//     / "collection not loaded".
//   - LoadCollection needs an index on every vector field; the metric of a
//     search defaults to the index's, and a different one is refused.
//   - DumpMessages starts at start_message_id inclusive (as the proto
//     documents) and leaves out TimeTick and AlterReplicateConfig messages;
//     without end_timetick it follows the WAL until cancelled.
//   - A write refused by a secondary has code 65535 and a reason starting
//     "code: STREAMING_CODE_REPLICATE_VIOLATION, cause: ..." that names the
//     cluster a replication target (secondary).
//   - A guarantee timestamp not reached within Options.GuaranteeTimeout gives
//     code 10001 (Milvus's timeout code).
//   - A secondary takes replicated messages on a pchannel only from the
//     source its configuration names there (others: "cluster id mismatch",
//     a replicate violation). Only a configuration message moves a
//     pchannel to a new source; one from another cluster is taken once the
//     current source no longer streams on that pchannel.
//   - A replicated DDL takes effect with its first copy, and in order: no
//     later copy of it, nor anything behind one, is applied before it.
//   - On a cluster never given a replicate configuration,
//     GetReplicateConfiguration and GetReplicateInfo answer only once one
//     arrives, so a caller with a deadline gets DEADLINE_EXCEEDED, as
//     Milvus 2.6 does (milvus-io/milvus#52686). A cluster meant to stand
//     alone can be given the one-cluster configuration (itself, no
//     topology), which is what a force promotion leaves.
//   - GetReplicateConfiguration returns the configuration without the
//     clusters' tokens; a configuration built from it must get them back
//     from elsewhere.
//
// It is not the product: where it and real Milvus differ, real Milvus is right.
package sim
