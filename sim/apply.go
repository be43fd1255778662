package sim

import (
	"cmp"
	"slices"
	"strconv"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/msgpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"google.golang.org/protobuf/proto"
)

// bcState tracks the copies of one broadcast message (DDL and configuration
// changes are written to every pchannel) seen so far.
type bcState struct {
	seen  []bool
	ids   []int64 // local message id of each copy
	count int
}

// noteCopy records that pchannel p holds a copy of the broadcast e and
// reports whether it is the first copy and whether all copies are now in.
func (c *Cluster) noteCopy(p int, e *entry) (first, complete bool, ids []int64) {
	c.bcMu.Lock()
	defer c.bcMu.Unlock()
	st := c.bcSeen[e.ts]
	if st == nil {
		st = &bcState{seen: make([]bool, len(c.wals)), ids: make([]int64, len(c.wals))}
		c.bcSeen[e.ts] = st
	}
	if st.seen[p] {
		return false, false, nil
	}
	st.seen[p] = true
	st.ids[p] = e.id
	st.count++
	first = st.count == 1
	if st.count == len(c.wals) {
		delete(c.bcSeen, e.ts)
		return first, true, st.ids
	}
	return first, false, nil
}

// apply applies WAL message e of pchannel p to the cluster state. The caller
// holds c.wals[p].mu (or is replaying). A configuration message whose copies
// are now complete is returned for the caller to apply with applyConfig.
//
// Ordinary DDL takes effect with its first copy: data that follows it on any
// pchannel then finds the collection. A configuration change takes effect
// once every pchannel has it, so that everything the old source wrote before
// it has arrived on every pchannel (the switchover guarantee).
func (c *Cluster) apply(p int, e *entry) *pendingConfig {
	c.tso.observe(e.ts)
	c.noteReplicated(p, e)
	switch e.kind {
	case kindTimeTick:
		return nil
	case kindInsert, kindDelete:
		c.applyData(e)
		return nil
	case kindAlterReplicaConfig:
		req := &milvuspb.UpdateReplicateConfigurationRequest{}
		if err := proto.Unmarshal(e.payload, req); err != nil {
			c.log.Warn("undecodable replicate configuration message", "err", err)
			return nil
		}
		// This pchannel now replicates from the source the configuration
		// names (none when it makes this cluster a primary). A new source
		// starts afresh, as Milvus starts a new secondary state: a
		// checkpoint of it from an earlier epoch is stale.
		cfg := req.GetReplicateConfiguration()
		source := topologyOf(cfg, c.id).source
		c.repl.mu.Lock()
		if c.repl.pchSource[p] != source {
			switch {
			case source == "" || source == e.src:
				// A primary; or this message came from the new source
				// (noteReplicated made it the checkpoint).
			case e.src != "" && len(clusterOf(cfg, source).GetPchannels()) > p:
				// Handed over by the old source: the new source applied
				// this very message, so all it sends from now on is newer
				// than it. Its time tick is the floor (see applyReplicated).
				c.repl.ckpts[ckptKey{source, p}] = ckpt{srcPch: clusterOf(cfg, source).GetPchannels()[p], ts: e.ts}
			default:
				delete(c.repl.ckpts, ckptKey{source, p})
			}
			c.repl.pchSource[p] = source
		}
		c.repl.mu.Unlock()
		_, complete, ids := c.noteCopy(p, e)
		if !complete {
			return nil
		}
		return &pendingConfig{cfg: req.GetReplicateConfiguration(), force: req.GetForcePromote(), ts: e.ts, ids: ids, extra: e.extra}
	}
	if e.broadcast() {
		// Only the first copy applies the DDL, and the others return (their
		// pchannel then counts as served past it) only once it took effect:
		// the lock spans counting and applying. So a DDL is applied before
		// anything behind any of its copies, the next DDL included (Milvus
		// applies DDL in order on its control channel).
		c.ddlApplyMu.Lock()
		defer c.ddlApplyMu.Unlock()
		if first, _, _ := c.noteCopy(p, e); !first {
			return nil
		}
	}
	if c.opts.beforeDDL != nil {
		c.opts.beforeDDL(e)
	}
	if err := c.applyDDL(e); err != nil {
		c.log.Warn("ddl message not applied", "type", e.kind, "ts", e.ts, "err", err)
	}
	return nil
}

func propInt(e *entry, key string) int64 {
	v, _ := strconv.ParseInt(e.extra[key], 10, 64)
	return v
}

// noteReplicated records how far replication got on pchannel p when e was
// received from another cluster.
func (c *Cluster) noteReplicated(p int, e *entry) {
	if e.src == "" {
		return
	}
	c.repl.mu.Lock()
	c.repl.ckpts[ckptKey{e.src, p}] = ckpt{srcPch: e.srcPch, msgID: e.srcID, ts: e.ts}
	c.repl.mu.Unlock()
}

// applyGroup applies the messages of one atomic group (see propGroupNext):
// an upsert's Delete and Insert, written with one timestamp, become
// visible to readers together, as Milvus makes them visible together (it
// writes them as one transaction and reads at a timestamp). The caller
// holds c.wals[p].mu (or is replaying).
func (c *Cluster) applyGroup(p int, es []*entry) *pendingConfig {
	if len(es) == 1 {
		return c.apply(p, es[0])
	}
	for _, e := range es {
		if e.kind != kindInsert && e.kind != kindDelete {
			// Only data is grouped; anything else takes effect one by one.
			var pc *pendingConfig
			for _, e := range es {
				if x := c.apply(p, e); x != nil {
					pc = x
				}
			}
			return pc
		}
	}
	last := es[len(es)-1]
	c.tso.observe(last.ts)
	c.noteReplicated(p, last)
	c.applyData(es...)
	return nil
}

// dataOp is a decoded Insert or Delete message.
type dataOp struct {
	coll *collection
	ins  *batch // the rows of an Insert; nil for a Delete
	del  []pkValue
	part int64 // Insert: the partition; Delete: the partition, 0 for any
}

// decodeData decodes an Insert or Delete message. ok is false when there is
// nothing to apply (a dropped collection or partition, a bad message).
func (c *Cluster) decodeData(e *entry) (op dataOp, ok bool) {
	if e.kind == kindDelete {
		req := &msgpb.DeleteRequest{}
		if err := proto.Unmarshal(e.payload, req); err != nil {
			c.log.Warn("undecodable delete message", "err", err)
			return op, false
		}
		c.cat.mu.RLock()
		coll := c.cat.colls[req.GetCollectionID()]
		c.cat.mu.RUnlock()
		if coll == nil {
			return op, false
		}
		return dataOp{coll: coll, del: pksFromIDs(req.GetPrimaryKeys()), part: req.GetPartitionID()}, true
	}
	req := &msgpb.InsertRequest{}
	if err := proto.Unmarshal(e.payload, req); err != nil {
		c.log.Warn("undecodable insert message", "err", err)
		return op, false
	}
	c.cat.mu.RLock()
	coll := c.cat.colls[req.GetCollectionID()]
	var part *partition
	if coll != nil {
		part = coll.partByID[req.GetPartitionID()]
	}
	c.cat.mu.RUnlock()
	if coll == nil || part == nil {
		c.log.Debug("insert for a dropped collection or partition ignored", "collection", req.GetCollectionID())
		return op, false
	}
	b, err := decodeFields(coll.fields, req.GetFieldsData(), int(req.GetNumRows()), true)
	if err != nil {
		c.log.Warn("insert message not applied", "collection", coll.id, "err", err)
		return op, false
	}
	return dataOp{coll: coll, ins: b, part: part.id}, true
}

// applyData applies data messages, in order, holding the rows of every
// collection they touch for writing throughout: a reader sees all of them
// or none.
func (c *Cluster) applyData(es ...*entry) {
	ops := make([]dataOp, 0, len(es))
	for _, e := range es {
		if op, ok := c.decodeData(e); ok {
			ops = append(ops, op)
		}
	}
	var colls []*collection
	for _, op := range ops {
		if !slices.Contains(colls, op.coll) {
			colls = append(colls, op.coll)
		}
	}
	// One lock order for every writer.
	slices.SortFunc(colls, func(a, b *collection) int { return cmp.Compare(a.id, b.id) })
	for _, coll := range colls {
		coll.data.mu.Lock()
	}
	for _, op := range ops {
		if op.ins != nil {
			op.coll.data.insertLocked(op.ins, op.part)
		} else {
			op.coll.data.removeLocked(op.del, op.part)
		}
	}
	for _, coll := range colls {
		coll.data.mu.Unlock()
	}
}

// applyDDL changes the catalog, by the kind of object the message is
// about. Requests were validated by the primary before they entered its
// WAL; here only what is needed to stay safe is checked.
func (c *Cluster) applyDDL(e *entry) error {
	switch e.kind {
	case kindCreateDatabase, kindDropDatabase:
		return c.cat.applyDatabase(e)
	case kindCreateCollection:
		return c.applyCreateCollection(e)
	case kindDropCollection, kindRenameCollection, kindAlterCollection, kindLoadCollection, kindReleaseCollection:
		return c.cat.applyCollection(e)
	case kindCreatePartition, kindDropPartition, kindLoadPartitions, kindReleasePartitions:
		return c.cat.applyPartition(e)
	case kindCreateIndex, kindDropIndex:
		return c.cat.applyIndex(e)
	case kindCreateAlias, kindAlterAlias, kindDropAlias:
		return c.cat.applyAlias(e)
	}
	c.log.Warn("unknown message type ignored", "type", e.kind)
	return nil
}

// applyDatabase creates or drops a database. Creating one that exists, or
// dropping one that does not (or the default database), changes nothing.
func (c *catalog) applyDatabase(e *entry) error {
	if e.kind == kindCreateDatabase {
		req := &milvuspb.CreateDatabaseRequest{}
		if err := proto.Unmarshal(e.payload, req); err != nil {
			return err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if _, ok := c.dbs[req.GetDbName()]; !ok {
			c.dbs[req.GetDbName()] = &database{id: propInt(e, propCollID), name: req.GetDbName(), created: e.ts, props: req.GetProperties(),
				colls: map[string]*collection{}, aliases: map[string]*collection{}}
		}
		return nil
	}
	req := &milvuspb.DropDatabaseRequest{}
	if err := proto.Unmarshal(e.payload, req); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if d, ok := c.dbs[req.GetDbName()]; ok && req.GetDbName() != defaultDB {
		for _, coll := range d.colls {
			delete(c.colls, coll.id)
		}
		delete(c.dbs, req.GetDbName())
	}
	return nil
}

// applyCollection drops, renames, alters, loads or releases an existing
// collection.
func (c *catalog) applyCollection(e *entry) error {
	switch e.kind {
	case kindDropCollection:
		return c.applyToColl(e, nil, func(coll *collection) {
			delete(c.colls, coll.id)
			if coll.db.colls[coll.name] == coll {
				delete(coll.db.colls, coll.name)
			}
			for a := range coll.aliases {
				delete(coll.db.aliases, a)
			}
		})
	case kindRenameCollection:
		req := &milvuspb.RenameCollectionRequest{}
		return c.applyToColl(e, req, func(coll *collection) { c.renameLocked(coll, req, e.ts) })
	case kindAlterCollection:
		req := &milvuspb.AlterCollectionRequest{}
		return c.applyToColl(e, req, func(coll *collection) {
			coll.props = mergeProps(coll.props, req.GetProperties(), req.GetDeleteKeys())
			coll.updated = e.ts
		})
	default: // kindLoadCollection, kindReleaseCollection
		return c.applyToColl(e, nil, func(coll *collection) {
			coll.loaded = e.kind == kindLoadCollection
			for _, p := range coll.parts {
				p.loaded = coll.loaded
			}
		})
	}
}

// renameLocked gives coll its new name, in its new database if that
// exists. Its aliases follow within a database and are dropped when it
// moves to another. The caller holds c.mu.
func (c *catalog) renameLocked(coll *collection, req *milvuspb.RenameCollectionRequest, ts uint64) {
	newDB := coll.db
	if req.GetNewDBName() != "" {
		if d, ok := c.dbs[req.GetNewDBName()]; ok {
			newDB = d
		}
	}
	delete(coll.db.colls, coll.name)
	for a := range coll.aliases {
		delete(coll.db.aliases, a)
	}
	if newDB != coll.db {
		coll.aliases = map[string]bool{}
	} else {
		for a := range coll.aliases {
			newDB.aliases[a] = coll
		}
	}
	coll.db = newDB
	coll.name = req.GetNewName()
	coll.schema.Name = coll.name
	coll.updated = ts
	newDB.colls[coll.name] = coll
}

// applyPartition creates, drops, loads or releases partitions of an
// existing collection. A collection is loaded when all its partitions are.
func (c *catalog) applyPartition(e *entry) error {
	switch e.kind {
	case kindCreatePartition:
		req := &milvuspb.CreatePartitionRequest{}
		return c.applyToColl(e, req, func(coll *collection) {
			if coll.parts[req.GetPartitionName()] != nil {
				return
			}
			part := &partition{id: propInt(e, propPartID), name: req.GetPartitionName(), created: e.ts, loaded: coll.loaded}
			coll.parts[part.name] = part
			coll.partByID[part.id] = part
		})
	case kindDropPartition:
		req := &milvuspb.DropPartitionRequest{}
		var data *collData
		var part *partition
		err := c.applyToColl(e, req, func(coll *collection) {
			data, part = coll.data, coll.parts[req.GetPartitionName()]
			if part != nil {
				delete(coll.parts, part.name)
				delete(coll.partByID, part.id)
			}
		})
		// The rows go after the catalog is released: data has its own lock.
		if part != nil {
			data.dropPartition(part.id)
		}
		return err
	}
	// kindLoadPartitions, kindReleasePartitions
	var req interface {
		proto.Message
		GetPartitionNames() []string
	} = &milvuspb.ReleasePartitionsRequest{}
	if e.kind == kindLoadPartitions {
		req = &milvuspb.LoadPartitionsRequest{}
	}
	return c.applyToColl(e, req, func(coll *collection) {
		for _, n := range req.GetPartitionNames() {
			if p := coll.parts[n]; p != nil {
				p.loaded = e.kind == kindLoadPartitions
			}
		}
		all := true
		for _, p := range coll.parts {
			all = all && p.loaded
		}
		coll.loaded = all
	})
}

// applyIndex creates or drops an index of an existing collection; a drop
// without an index name drops the field's indexes.
func (c *catalog) applyIndex(e *entry) error {
	if e.kind == kindCreateIndex {
		req := &milvuspb.CreateIndexRequest{}
		return c.applyToColl(e, req, func(coll *collection) {
			f := coll.byName[req.GetFieldName()]
			if f == nil {
				return
			}
			params := req.GetExtraParams()
			metric, _ := kvGet(params, "metric_type")
			coll.indexes[req.GetIndexName()] = &indexInfo{id: propInt(e, propIndexID), name: req.GetIndexName(), field: f, params: params, metric: metric, created: e.ts}
		})
	}
	req := &milvuspb.DropIndexRequest{}
	return c.applyToColl(e, req, func(coll *collection) {
		for name, idx := range coll.indexes {
			if name == req.GetIndexName() || req.GetIndexName() == "" && idx.field.name == req.GetFieldName() {
				delete(coll.indexes, name)
			}
		}
	})
}

// applyAlias points an alias at a collection (taking it from the one it
// named before) or drops it.
func (c *catalog) applyAlias(e *entry) error {
	if e.kind == kindDropAlias {
		req := &milvuspb.DropAliasRequest{}
		if err := proto.Unmarshal(e.payload, req); err != nil {
			return err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		d := c.dbs[e.extra[propDB]]
		if d == nil {
			return nil
		}
		if coll, ok := d.aliases[req.GetAlias()]; ok {
			delete(coll.aliases, req.GetAlias())
			delete(d.aliases, req.GetAlias())
		}
		return nil
	}
	var req interface {
		proto.Message
		GetAlias() string
	} = &milvuspb.AlterAliasRequest{}
	if e.kind == kindCreateAlias {
		req = &milvuspb.CreateAliasRequest{}
	}
	return c.applyToColl(e, req, func(coll *collection) {
		alias := req.GetAlias()
		if old, ok := coll.db.aliases[alias]; ok {
			delete(old.aliases, alias)
		}
		coll.db.aliases[alias] = coll
		coll.aliases[alias] = true
	})
}

// applyToColl decodes e's payload into req (unless nil) and runs fn on the
// collection e names, holding the catalog for writing. A collection since
// dropped is left alone: the message is stale, not wrong.
func (c *catalog) applyToColl(e *entry, req proto.Message, fn func(coll *collection)) error {
	if req != nil {
		if err := proto.Unmarshal(e.payload, req); err != nil {
			return err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if coll := c.colls[propInt(e, propCollID)]; coll != nil {
		fn(coll)
	}
	return nil
}

func mergeProps(cur, set []*commonpb.KeyValuePair, del []string) []*commonpb.KeyValuePair {
	m := map[string]string{}
	var order []string
	for _, kv := range cur {
		if _, ok := m[kv.GetKey()]; !ok {
			order = append(order, kv.GetKey())
		}
		m[kv.GetKey()] = kv.GetValue()
	}
	for _, kv := range set {
		if _, ok := m[kv.GetKey()]; !ok {
			order = append(order, kv.GetKey())
		}
		m[kv.GetKey()] = kv.GetValue()
	}
	for _, k := range del {
		delete(m, k)
	}
	var out []*commonpb.KeyValuePair
	for _, k := range order {
		if v, ok := m[k]; ok {
			out = append(out, &commonpb.KeyValuePair{Key: k, Value: v})
		}
	}
	return out
}

func (c *Cluster) applyCreateCollection(e *entry) error {
	req := &milvuspb.CreateCollectionRequest{}
	if err := proto.Unmarshal(e.payload, req); err != nil {
		return err
	}
	schema := &schemapb.CollectionSchema{}
	if err := proto.Unmarshal(req.GetSchema(), schema); err != nil {
		return err
	}
	fields, desc, pk, dyn, err := buildFields(req.GetCollectionName(), schema)
	if err != nil {
		return err
	}
	pchIdx, err := splitInts(e.extra[propPChIdx])
	if err != nil || len(pchIdx) == 0 {
		return errParam("bad pchannel assignment %q", e.extra[propPChIdx])
	}
	id := propInt(e, propCollID)
	coll := &collection{
		id: id, name: req.GetCollectionName(), schema: desc, fields: fields, pk: pk, dyn: dyn,
		byName: map[string]*fieldInfo{}, shards: int32(len(pchIdx)), consistency: req.GetConsistencyLevel(),
		props: req.GetProperties(), created: e.ts, updated: e.ts,
		parts: map[string]*partition{}, partByID: map[int64]*partition{}, indexes: map[string]*indexInfo{},
		aliases: map[string]bool{}, data: newCollData(fields, pk),
	}
	for _, f := range fields {
		coll.byName[f.name] = f
	}
	for shard, p := range pchIdx {
		if p < 0 || p >= len(c.wals) {
			p = shard % len(c.wals)
		}
		coll.pchIdx = append(coll.pchIdx, p)
		coll.vchannels = append(coll.vchannels, vchannelName(c.pchannels[p], id, shard))
	}
	part := &partition{id: propInt(e, propPartID), name: defaultPartition, created: e.ts}
	coll.parts[part.name] = part
	coll.partByID[part.id] = part
	c.cat.mu.Lock()
	defer c.cat.mu.Unlock()
	d := c.cat.dbs[e.extra[propDB]]
	if d == nil {
		return errDatabaseNotFound(e.extra[propDB])
	}
	if old := d.colls[coll.name]; old != nil {
		// The source wins: a target that held a collection of the same name
		// (a former primary rejoining) takes the source's.
		delete(c.cat.colls, old.id)
	}
	coll.db = d
	d.colls[coll.name] = coll
	c.cat.colls[id] = coll
	return nil
}
