package sim

import (
	"context"
	"strconv"

	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/msgpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"google.golang.org/protobuf/proto"
)

// dmlTarget resolves the collection and partition a write addresses.
func (c *Cluster) dmlTarget(db, collName, partName string) (*collection, *partition, error) {
	c.cat.mu.RLock()
	defer c.cat.mu.RUnlock()
	coll, err := c.cat.resolveLocked(db, collName)
	if err != nil {
		return nil, nil, err
	}
	if partName == "" {
		partName = defaultPartition
	}
	part := coll.parts[partName]
	if part == nil {
		return nil, nil, errPartitionNotFound(partName)
	}
	return coll, part, nil
}

// dataMsg is a data message to append: its type, and its payload given
// the timestamp.
type dataMsg struct {
	kind  string
	build func(ts uint64) proto.Message
}

// appendData appends data messages of coll to pchannel p with one
// timestamp, applies them and returns the timestamp. Several messages form
// a group (propGroupNext) that readers, here and on every target, see
// whole or not at all. The timestamp is allocated under the pchannel lock,
// so each pchannel's WAL is in timestamp order.
func (c *Cluster) appendData(p int, coll *collection, msgs ...dataMsg) (uint64, error) {
	w := c.wals[p]
	w.mu.Lock()
	defer w.mu.Unlock()
	if c.stopped() {
		return 0, newErr(codeServiceUnavailable, "cluster %s is shutting down", c.id)
	}
	ts := c.tso.alloc()
	es := make([]*entry, len(msgs))
	for i, m := range msgs {
		payload, err := proto.Marshal(m.build(ts))
		if err != nil {
			return 0, newErr(codeServiceInternal, "encode %s message: %v", m.kind, err)
		}
		extra := map[string]string{propDB: coll.db.name, propColl: coll.name, propCollID: strconv.FormatInt(coll.id, 10)}
		if i < len(msgs)-1 {
			extra[propGroupNext] = "1"
		}
		es[i] = &entry{ts: ts, kind: m.kind, payload: payload, extra: extra}
	}
	if err := w.appendLocked(es...); err != nil {
		return 0, newErr(codeServiceInternal, "%v", err)
	}
	c.applyGroup(p, es)
	w.advance(ts)
	return ts, nil
}

func repeatTS(ts uint64, n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = ts
	}
	return out
}

// write implements Insert and Upsert: rows are hashed by primary key onto the
// collection's shards and each shard's rows become one message on its
// pchannel. An upsert writes a Delete then an Insert at one timestamp, as
// one group that readers see whole: Milvus 2.6 writes them in one
// transaction and reads at a timestamp, so a read never finds an upserted
// key missing.
func (c *Cluster) write(ctx context.Context, db, collName, partName string, fds []*schemapb.FieldData, numRows uint32, upsert bool) (*milvuspb.MutationResult, error) {
	c.ddlMu.RLock()
	defer c.ddlMu.RUnlock()
	if err := c.checkWritable(); err != nil {
		return nil, err
	}
	coll, part, err := c.dmlTarget(db, collName, partName)
	if err != nil {
		return nil, err
	}
	b, err := decodeFields(coll.fields, fds, int(numRows), upsert)
	if err != nil {
		return nil, err
	}
	pkCol := b.cols[coll.pk.pos]
	if coll.pk.autoID && !upsert {
		first := int64(c.tso.allocN(b.n))
		for i := 0; i < b.n; i++ {
			pkCol.i64 = append(pkCol.i64, first+int64(i))
		}
	}
	if pkCol.len() != b.n {
		return nil, errParam("the primary key field %s must be provided", coll.pk.name)
	}
	pks := make([]pkValue, b.n)
	byShard := make([][]int32, len(coll.pchIdx))
	for r := 0; r < b.n; r++ {
		if coll.pk.typ == schemapb.DataType_Int64 {
			pks[r] = pkValue{i: pkCol.i64[r]}
		} else {
			pks[r] = pkValue{isStr: true, s: pkCol.s[r]}
		}
		sh := shardOf(pks[r], len(coll.pchIdx))
		byShard[sh] = append(byShard[sh], int32(r))
	}
	var maxTS uint64
	for sh, rows := range byShard {
		if len(rows) == 0 {
			continue
		}
		p := coll.pchIdx[sh]
		vch := coll.vchannels[sh]
		var msgs []dataMsg
		if upsert {
			shardPKs := make([]pkValue, len(rows))
			for i, r := range rows {
				shardPKs[i] = pks[r]
			}
			msgs = append(msgs, dataMsg{kindDelete, func(ts uint64) proto.Message {
				return &msgpb.DeleteRequest{ShardName: vch, DbName: coll.db.name, CollectionName: coll.name, CollectionID: coll.id,
					PrimaryKeys: idsOf(coll.pk.typ, shardPKs), Timestamps: repeatTS(ts, len(rows)), NumRows: int64(len(rows))}
			}})
		}
		fdata := b.subsetFieldData(coll.fields, rows)
		msgs = append(msgs, dataMsg{kindInsert, func(ts uint64) proto.Message {
			return &msgpb.InsertRequest{ShardName: vch, DbName: coll.db.name, CollectionName: coll.name, PartitionName: part.name,
				DbID: coll.db.id, CollectionID: coll.id, PartitionID: part.id, Timestamps: repeatTS(ts, len(rows)),
				FieldsData: fdata, NumRows: uint64(len(rows)), Version: msgpb.InsertDataVersion_ColumnBased}
		}})
		ts, err := c.appendData(p, coll, msgs...)
		if err != nil {
			return nil, err
		}
		maxTS = max(maxTS, ts)
	}
	succ := make([]uint32, b.n)
	for i := range succ {
		succ[i] = uint32(i)
	}
	res := &milvuspb.MutationResult{Status: okStatus(), IDs: idsOf(coll.pk.typ, pks), SuccIndex: succ, Timestamp: maxTS}
	if upsert {
		res.UpsertCnt = int64(b.n)
	} else {
		res.InsertCnt = int64(b.n)
	}
	return res, nil
}

func (s *service) Insert(ctx context.Context, req *milvuspb.InsertRequest) (*milvuspb.MutationResult, error) {
	res, err := s.c.write(ctx, dbOf(ctx, req.GetDbName()), req.GetCollectionName(), req.GetPartitionName(), req.GetFieldsData(), req.GetNumRows(), false)
	if err != nil {
		return &milvuspb.MutationResult{Status: statusOf(err)}, nil
	}
	return res, nil
}

func (s *service) Upsert(ctx context.Context, req *milvuspb.UpsertRequest) (*milvuspb.MutationResult, error) {
	if req.GetPartialUpdate() {
		return &milvuspb.MutationResult{Status: statusOf(errUnsupported("partial update"))}, nil
	}
	res, err := s.c.write(ctx, dbOf(ctx, req.GetDbName()), req.GetCollectionName(), req.GetPartitionName(), req.GetFieldsData(), req.GetNumRows(), true)
	if err != nil {
		return &milvuspb.MutationResult{Status: statusOf(err)}, nil
	}
	return res, nil
}

func (s *service) Delete(ctx context.Context, req *milvuspb.DeleteRequest) (*milvuspb.MutationResult, error) {
	res, err := s.c.delete(ctx, req)
	if err != nil {
		return &milvuspb.MutationResult{Status: statusOf(err)}, nil
	}
	return res, nil
}

// delete implements Delete: `pk in [...]` / `pk == v` deletes those keys;
// any other expression is evaluated on the loaded collection first, as
// Milvus does.
func (c *Cluster) delete(ctx context.Context, req *milvuspb.DeleteRequest) (*milvuspb.MutationResult, error) {
	c.ddlMu.RLock()
	defer c.ddlMu.RUnlock()
	if err := c.checkWritable(); err != nil {
		return nil, err
	}
	db := dbOf(ctx, req.GetDbName())
	coll, part, err := c.dmlTarget(db, req.GetCollectionName(), req.GetPartitionName())
	if err != nil {
		return nil, err
	}
	var partID int64
	if req.GetPartitionName() != "" {
		partID = part.id
	}
	if req.GetExpr() == "" {
		return nil, errParam("delete plan can't be empty or always true : %s", req.GetExpr())
	}
	f, err := compileFilter(req.GetExpr(), coll.exprEnv(req.GetExprTemplateValues()))
	if err != nil {
		return nil, err
	}
	var pks []pkValue
	if f.isPK {
		pks = f.pkOnly
	} else {
		c.cat.mu.RLock()
		loaded, _ := loadedLocked(coll, nil)
		c.cat.mu.RUnlock()
		if !loaded {
			return nil, errCollectionNotLoaded(coll.name)
		}
		d := coll.data
		d.mu.RLock()
		pred := f.bind(d)
		for r := int32(0); r < int32(d.rows()); r++ {
			if d.alive[r] && (partID == 0 || d.part[r] == partID) && pred(r) {
				pks = append(pks, d.pkAt(r))
			}
		}
		d.mu.RUnlock()
	}
	byShard := make([][]pkValue, len(coll.pchIdx))
	for _, p := range pks {
		sh := shardOf(p, len(coll.pchIdx))
		byShard[sh] = append(byShard[sh], p)
	}
	var maxTS uint64
	for sh, keys := range byShard {
		if len(keys) == 0 {
			continue
		}
		vch := coll.vchannels[sh]
		ts, err := c.appendData(coll.pchIdx[sh], coll, dataMsg{kindDelete, func(ts uint64) proto.Message {
			return &msgpb.DeleteRequest{ShardName: vch, DbName: coll.db.name, CollectionName: coll.name, PartitionName: req.GetPartitionName(),
				CollectionID: coll.id, PartitionID: partID, PrimaryKeys: idsOf(coll.pk.typ, keys), Timestamps: repeatTS(ts, len(keys)), NumRows: int64(len(keys))}
		}})
		if err != nil {
			return nil, err
		}
		maxTS = max(maxTS, ts)
	}
	if maxTS == 0 {
		maxTS = c.tso.alloc()
	}
	return &milvuspb.MutationResult{Status: okStatus(), IDs: idsOf(coll.pk.typ, pks), DeleteCnt: int64(len(pks)), Timestamp: maxTS}, nil
}

func (s *service) Flush(ctx context.Context, req *milvuspb.FlushRequest) (*milvuspb.FlushResponse, error) {
	c := s.c
	db := dbOf(ctx, req.GetDbName())
	if err := c.checkWritable(); err != nil {
		return &milvuspb.FlushResponse{Status: statusOf(err)}, nil
	}
	resp := &milvuspb.FlushResponse{Status: okStatus(), DbName: db, CollSegIDs: map[string]*schemapb.LongArray{},
		FlushCollSegIDs: map[string]*schemapb.LongArray{}, CollSealTimes: map[string]int64{}, CollFlushTs: map[string]uint64{}}
	ts := c.tso.alloc()
	for _, name := range req.GetCollectionNames() {
		if _, err := c.cat.resolve(db, name); err != nil {
			return &milvuspb.FlushResponse{Status: statusOf(err)}, nil
		}
		resp.CollSegIDs[name] = &schemapb.LongArray{}
		resp.FlushCollSegIDs[name] = &schemapb.LongArray{}
		resp.CollSealTimes[name] = PhysicalTime(ts).Unix()
		resp.CollFlushTs[name] = ts
	}
	return resp, nil
}

func (s *service) GetFlushState(ctx context.Context, req *milvuspb.GetFlushStateRequest) (*milvuspb.GetFlushStateResponse, error) {
	if req.GetCollectionName() == "" {
		return &milvuspb.GetFlushStateResponse{Status: okStatus(), Flushed: true}, nil
	}
	coll, err := s.c.cat.resolve(dbOf(ctx, req.GetDbName()), req.GetCollectionName())
	if err != nil {
		return &milvuspb.GetFlushStateResponse{Status: statusOf(err)}, nil
	}
	return &milvuspb.GetFlushStateResponse{Status: okStatus(), Flushed: s.c.servedTS(coll.pchIdx) >= req.GetFlushTs()}, nil
}
