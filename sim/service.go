package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// simVersion is what GetVersion reports.
const simVersion = "v2.6.0-sim"

// service implements milvuspb.MilvusServiceServer on a Cluster. Methods not
// implemented here answer gRPC Unimplemented.
type service struct {
	milvuspb.UnimplementedMilvusServiceServer
	c *Cluster
}

// dbOf is the database a request addresses: its db_name, else the `dbname`
// metadata the SDKs send, else "default".
func dbOf(ctx context.Context, reqDB string) string {
	if reqDB != "" {
		return reqDB
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("dbname"); len(v) > 0 && v[0] != "" {
			return v[0]
		}
	}
	return defaultDB
}

// checkWritable refuses writes and DDL on a replication secondary, as Milvus
// 2.6 does.
func (c *Cluster) checkWritable() error {
	if c.stopped() {
		return newErr(codeServiceUnavailable, "cluster %s is shutting down", c.id)
	}
	if role(c.role.Load()) == roleSecondary {
		c.repl.mu.Lock()
		src := c.repl.source
		c.repl.mu.Unlock()
		return errReplicateViolation("non-replicate message cannot be received in secondary role: cluster %s is a replication target (secondary) of %s and refuses writes and DDL", c.id, src)
	}
	return nil
}

// ddl runs fn holding ddlMu exclusively, on a writable cluster.
func (c *Cluster) ddl(fn func() error) error {
	c.ddlMu.Lock()
	defer c.ddlMu.Unlock()
	if err := c.checkWritable(); err != nil {
		return err
	}
	return fn()
}

func (c *Cluster) broadcastDDL(kind string, req proto.Message, props map[string]string) error {
	payload, err := proto.Marshal(req)
	if err != nil {
		return errParam("cannot encode request: %v", err)
	}
	_, err = c.broadcastLocked(kind, payload, props, nil)
	return err
}

// collectionDDL broadcasts req as kind on the collection db/name addresses,
// with its properties; c.ddl must be running. check (when not nil) inspects
// the collection under the catalog's read lock first; it answers skip for a
// request Milvus takes as an idempotent no-op, which then succeeds unsent.
func (c *Cluster) collectionDDL(db, name, kind string, req proto.Message, check func(coll *collection) (skip bool, err error)) error {
	skip := false
	coll, err := c.cat.inspect(db, name, func(coll *collection) (err error) {
		if check != nil {
			skip, err = check(coll)
		}
		return err
	})
	if err != nil || skip {
		return err
	}
	return c.broadcastDDL(kind, req, collProps(coll))
}

// ddl runs fn as one DDL (see Cluster.ddl) on the database a request with
// db_name reqDB addresses, and answers its status as Milvus does.
func (s *service) ddl(ctx context.Context, reqDB string, fn func(c *Cluster, db string) error) (*commonpb.Status, error) {
	db := dbOf(ctx, reqDB)
	return statusOf(s.c.ddl(func() error { return fn(s.c, db) })), nil
}

// collectionDDL runs c.collectionDDL as one DDL and answers its status.
func (s *service) collectionDDL(ctx context.Context, reqDB, name, kind string, req proto.Message, check func(coll *collection) (skip bool, err error)) (*commonpb.Status, error) {
	return s.ddl(ctx, reqDB, func(c *Cluster, db string) error {
		return c.collectionDDL(db, name, kind, req, check)
	})
}

// missingPartitionLocked is the error for the last of names coll lacks, nil
// when it has them all. Caller holds the catalog's lock.
func missingPartitionLocked(coll *collection, names []string) error {
	var err error
	for _, n := range names {
		if coll.parts[n] == nil {
			err = errPartitionNotFound(n)
		}
	}
	return err
}

func collProps(coll *collection) map[string]string {
	return map[string]string{propDB: coll.db.name, propColl: coll.name, propCollID: strconv.FormatInt(coll.id, 10)}
}

func (c *Cluster) allocID() int64 { return int64(c.tso.alloc()) }

// service basics

func (s *service) Connect(ctx context.Context, req *milvuspb.ConnectRequest) (*milvuspb.ConnectResponse, error) {
	return &milvuspb.ConnectResponse{
		Status: okStatus(),
		ServerInfo: &commonpb.ServerInfo{BuildTags: simVersion, GoVersion: runtime.Version(), DeployMode: "CLUSTER",
			Reserved: map[string]string{"cluster_id": s.c.id, "simulator": "milvus-ha-proxy"}},
		Identifier: s.c.connID.Add(1),
	}, nil
}

func (s *service) GetVersion(ctx context.Context, req *milvuspb.GetVersionRequest) (*milvuspb.GetVersionResponse, error) {
	return &milvuspb.GetVersionResponse{Status: okStatus(), Version: simVersion}, nil
}

func (s *service) CheckHealth(ctx context.Context, req *milvuspb.CheckHealthRequest) (*milvuspb.CheckHealthResponse, error) {
	if s.c.stopped() {
		return &milvuspb.CheckHealthResponse{Status: okStatus(), IsHealthy: false, Reasons: []string{"cluster is shutting down"}}, nil
	}
	return &milvuspb.CheckHealthResponse{Status: okStatus(), IsHealthy: true}, nil
}

func (s *service) AllocTimestamp(ctx context.Context, req *milvuspb.AllocTimestampRequest) (*milvuspb.AllocTimestampResponse, error) {
	return &milvuspb.AllocTimestampResponse{Status: okStatus(), Timestamp: s.c.tso.alloc()}, nil
}

// databases

func (s *service) CreateDatabase(ctx context.Context, req *milvuspb.CreateDatabaseRequest) (*commonpb.Status, error) {
	c := s.c
	return statusOf(c.ddl(func() error {
		if err := validName("database", req.GetDbName()); err != nil {
			return newErr(codeDatabaseInvalid, "invalid database name[database=%s]: %v", req.GetDbName(), err)
		}
		c.cat.mu.RLock()
		_, exists := c.cat.dbs[req.GetDbName()]
		n := len(c.cat.dbs)
		c.cat.mu.RUnlock()
		if exists {
			return errParam("database already exist: %s", req.GetDbName())
		}
		if n >= 64 {
			return newErr(801, "exceeded the limit number of database[limit=64]")
		}
		return c.broadcastDDL(kindCreateDatabase, req, map[string]string{propDB: req.GetDbName(), propCollID: strconv.FormatInt(c.allocID(), 10)})
	})), nil
}

func (s *service) DropDatabase(ctx context.Context, req *milvuspb.DropDatabaseRequest) (*commonpb.Status, error) {
	c := s.c
	return statusOf(c.ddl(func() error {
		if req.GetDbName() == defaultDB {
			return errParam("can not drop default database")
		}
		c.cat.mu.RLock()
		d, exists := c.cat.dbs[req.GetDbName()]
		nonEmpty := exists && len(d.colls) > 0
		c.cat.mu.RUnlock()
		if !exists {
			return nil
		}
		if nonEmpty {
			return errParam("database:%s not empty, must drop all collections before drop database", req.GetDbName())
		}
		return c.broadcastDDL(kindDropDatabase, req, map[string]string{propDB: req.GetDbName()})
	})), nil
}

func (s *service) ListDatabases(ctx context.Context, req *milvuspb.ListDatabasesRequest) (*milvuspb.ListDatabasesResponse, error) {
	cat := s.c.cat
	cat.mu.RLock()
	defer cat.mu.RUnlock()
	resp := &milvuspb.ListDatabasesResponse{Status: okStatus()}
	var dbs []*database
	for _, d := range cat.dbs {
		dbs = append(dbs, d)
	}
	sort.Slice(dbs, func(i, j int) bool { return dbs[i].id < dbs[j].id })
	for _, d := range dbs {
		resp.DbNames = append(resp.DbNames, d.name)
		resp.DbIds = append(resp.DbIds, d.id)
		resp.CreatedTimestamp = append(resp.CreatedTimestamp, d.created)
	}
	return resp, nil
}

func (s *service) DescribeDatabase(ctx context.Context, req *milvuspb.DescribeDatabaseRequest) (*milvuspb.DescribeDatabaseResponse, error) {
	cat := s.c.cat
	cat.mu.RLock()
	defer cat.mu.RUnlock()
	d, ok := cat.dbs[req.GetDbName()]
	if !ok {
		return &milvuspb.DescribeDatabaseResponse{Status: statusOf(errDatabaseNotFound(req.GetDbName()))}, nil
	}
	return &milvuspb.DescribeDatabaseResponse{Status: okStatus(), DbName: d.name, DbID: d.id, CreatedTimestamp: d.created, Properties: d.props}, nil
}

// collections

func (s *service) CreateCollection(ctx context.Context, req *milvuspb.CreateCollectionRequest) (*commonpb.Status, error) {
	name := req.GetCollectionName()
	return s.ddl(ctx, req.GetDbName(), func(c *Cluster, db string) error {
		if err := validName("collection", name); err != nil {
			return err
		}
		schema := &schemapb.CollectionSchema{}
		if err := proto.Unmarshal(req.GetSchema(), schema); err != nil {
			return errParam("cannot unmarshal the collection schema: %v", err)
		}
		_, desc, _, _, err := buildFields(name, schema)
		if err != nil {
			return err
		}
		c.cat.mu.RLock()
		d := c.cat.dbs[db]
		var existing *collection
		aliasTaken := false
		if d != nil {
			existing = d.colls[name]
			_, aliasTaken = d.aliases[name]
		}
		c.cat.mu.RUnlock()
		if d == nil {
			return errDatabaseNotFound(db)
		}
		if existing != nil {
			if proto.Equal(existing.schema, desc) {
				return nil
			}
			return errParam("create duplicate collection with different parameters, collection: %s", name)
		}
		if aliasTaken {
			return errParam("collection name [%s] conflicts with an existing alias, please choose a unique name", name)
		}
		shards := req.GetShardsNum()
		if shards <= 0 {
			shards = 1
		}
		if shards > maxShards {
			return errParam("maximum shards's number should be limited to %d", maxShards)
		}
		id := c.allocID()
		pch := make([]int, shards)
		for k := range pch {
			pch[k] = int((id/2 + int64(k)) % int64(len(c.wals)))
		}
		out := proto.Clone(req).(*milvuspb.CreateCollectionRequest)
		out.DbName = db
		out.ShardsNum = shards
		return c.broadcastDDL(kindCreateCollection, out, map[string]string{
			propDB: db, propColl: name, propCollID: strconv.FormatInt(id, 10),
			propPartID: strconv.FormatInt(c.allocID(), 10), propPChIdx: joinInts(pch),
		})
	})
}

func (s *service) DropCollection(ctx context.Context, req *milvuspb.DropCollectionRequest) (*commonpb.Status, error) {
	return s.ddl(ctx, req.GetDbName(), func(c *Cluster, db string) error {
		c.cat.mu.RLock()
		d := c.cat.dbs[db]
		var coll *collection
		viaAlias := false
		if d != nil {
			coll = d.colls[req.GetCollectionName()]
			_, viaAlias = d.aliases[req.GetCollectionName()]
		}
		c.cat.mu.RUnlock()
		if d == nil {
			return errDatabaseNotFound(db)
		}
		if viaAlias {
			return errParam("cannot drop the collection via alias = %s", req.GetCollectionName())
		}
		if coll == nil {
			return nil // Milvus drops idempotently
		}
		return c.broadcastDDL(kindDropCollection, req, collProps(coll))
	})
}

func (s *service) HasCollection(ctx context.Context, req *milvuspb.HasCollectionRequest) (*milvuspb.BoolResponse, error) {
	db := dbOf(ctx, req.GetDbName())
	_, err := s.c.cat.resolve(db, req.GetCollectionName())
	if err != nil {
		if me, ok := err.(*milvusError); ok && me.code == codeCollectionNotFound {
			return &milvuspb.BoolResponse{Status: okStatus(), Value: false}, nil
		}
		return &milvuspb.BoolResponse{Status: statusOf(err)}, nil
	}
	return &milvuspb.BoolResponse{Status: okStatus(), Value: true}, nil
}

func (s *service) DescribeCollection(ctx context.Context, req *milvuspb.DescribeCollectionRequest) (*milvuspb.DescribeCollectionResponse, error) {
	cat := s.c.cat
	db := dbOf(ctx, req.GetDbName())
	cat.mu.RLock()
	defer cat.mu.RUnlock()
	var coll *collection
	var err error
	if req.GetCollectionName() == "" && req.GetCollectionID() != 0 {
		coll = cat.colls[req.GetCollectionID()]
		if coll == nil {
			err = errCollectionNotFound(db, strconv.FormatInt(req.GetCollectionID(), 10))
		}
	} else {
		coll, err = cat.resolveLocked(db, req.GetCollectionName())
	}
	if err != nil {
		return &milvuspb.DescribeCollectionResponse{Status: statusOf(err)}, nil
	}
	schema := proto.Clone(coll.schema).(*schemapb.CollectionSchema)
	schema.DbName = coll.db.name
	var pch []string
	for _, p := range coll.pchIdx {
		pch = append(pch, s.c.pchannels[p])
	}
	return &milvuspb.DescribeCollectionResponse{
		Status: okStatus(), Schema: schema, CollectionID: coll.id,
		VirtualChannelNames: append([]string(nil), coll.vchannels...), PhysicalChannelNames: pch,
		CreatedTimestamp: coll.created, CreatedUtcTimestamp: uint64(PhysicalTime(coll.created).UnixMilli()),
		ShardsNum: coll.shards, Aliases: coll.aliasListLocked(), ConsistencyLevel: coll.consistency,
		CollectionName: coll.name, Properties: coll.props, DbName: coll.db.name, NumPartitions: int64(len(coll.parts)),
		DbId: coll.db.id, UpdateTimestamp: coll.updated, UpdateTimestampStr: strconv.FormatUint(coll.updated, 10),
		RequestTime: s.c.tso.peek(),
	}, nil
}

func (s *service) ShowCollections(ctx context.Context, req *milvuspb.ShowCollectionsRequest) (*milvuspb.ShowCollectionsResponse, error) {
	cat := s.c.cat
	db := dbOf(ctx, req.GetDbName())
	cat.mu.RLock()
	defer cat.mu.RUnlock()
	d := cat.dbs[db]
	if d == nil {
		return &milvuspb.ShowCollectionsResponse{Status: statusOf(errDatabaseNotFound(db))}, nil
	}
	var colls []*collection
	if len(req.GetCollectionNames()) > 0 {
		for _, n := range req.GetCollectionNames() {
			coll, err := cat.resolveLocked(db, n)
			if err != nil {
				return &milvuspb.ShowCollectionsResponse{Status: statusOf(err)}, nil
			}
			colls = append(colls, coll)
		}
	} else {
		for _, coll := range d.colls {
			colls = append(colls, coll)
		}
		sort.Slice(colls, func(i, j int) bool { return colls[i].id < colls[j].id })
	}
	resp := &milvuspb.ShowCollectionsResponse{Status: okStatus()}
	for _, coll := range colls {
		if req.GetType() == milvuspb.ShowType_InMemory && !coll.loaded {
			if len(req.GetCollectionNames()) > 0 {
				return &milvuspb.ShowCollectionsResponse{Status: statusOf(errCollectionNotLoaded(coll.name))}, nil
			}
			continue
		}
		pct := int64(0)
		if coll.loaded {
			pct = 100
		}
		resp.CollectionNames = append(resp.CollectionNames, coll.name)
		resp.CollectionIds = append(resp.CollectionIds, coll.id)
		resp.CreatedTimestamps = append(resp.CreatedTimestamps, coll.created)
		resp.CreatedUtcTimestamps = append(resp.CreatedUtcTimestamps, uint64(PhysicalTime(coll.created).UnixMilli()))
		resp.InMemoryPercentages = append(resp.InMemoryPercentages, pct)
		resp.QueryServiceAvailable = append(resp.QueryServiceAvailable, coll.loaded)
		resp.ShardsNum = append(resp.ShardsNum, coll.shards)
	}
	return resp, nil
}

func (s *service) RenameCollection(ctx context.Context, req *milvuspb.RenameCollectionRequest) (*commonpb.Status, error) {
	return s.ddl(ctx, req.GetDbName(), func(c *Cluster, db string) error {
		if err := validName("collection", req.GetNewName()); err != nil {
			return err
		}
		var out *milvuspb.RenameCollectionRequest
		var props map[string]string
		err := func() error {
			c.cat.mu.RLock()
			defer c.cat.mu.RUnlock()
			_, coll, err := c.cat.collectionLocked(db, req.GetOldName())
			if err != nil {
				return err
			}
			newDB := db
			if req.GetNewDBName() != "" {
				newDB = req.GetNewDBName()
			}
			nd := c.cat.dbs[newDB]
			if nd == nil {
				return errDatabaseNotFound(newDB)
			}
			if nd.colls[req.GetNewName()] != nil || nd.aliases[req.GetNewName()] != nil {
				return errParam("duplicated new collection name %s in database %s with other collection name or alias", req.GetNewName(), newDB)
			}
			out = proto.Clone(req).(*milvuspb.RenameCollectionRequest)
			out.DbName = db
			out.NewDBName = newDB
			props = collProps(coll)
			return nil
		}()
		if err != nil {
			return err
		}
		return c.broadcastDDL(kindRenameCollection, out, props)
	})
}

func (s *service) AlterCollection(ctx context.Context, req *milvuspb.AlterCollectionRequest) (*commonpb.Status, error) {
	return s.collectionDDL(ctx, req.GetDbName(), req.GetCollectionName(), kindAlterCollection, req, nil)
}

func (s *service) GetCollectionStatistics(ctx context.Context, req *milvuspb.GetCollectionStatisticsRequest) (*milvuspb.GetCollectionStatisticsResponse, error) {
	coll, err := s.c.cat.resolve(dbOf(ctx, req.GetDbName()), req.GetCollectionName())
	if err != nil {
		return &milvuspb.GetCollectionStatisticsResponse{Status: statusOf(err)}, nil
	}
	return &milvuspb.GetCollectionStatisticsResponse{Status: okStatus(),
		Stats: []*commonpb.KeyValuePair{{Key: "row_count", Value: strconv.Itoa(coll.data.aliveRows())}}}, nil
}

// partitions

func (s *service) CreatePartition(ctx context.Context, req *milvuspb.CreatePartitionRequest) (*commonpb.Status, error) {
	return s.ddl(ctx, req.GetDbName(), func(c *Cluster, db string) error {
		if err := validName("partition", req.GetPartitionName()); err != nil {
			return err
		}
		exists := false
		coll, err := c.cat.inspect(db, req.GetCollectionName(), func(coll *collection) error {
			if exists = coll.parts[req.GetPartitionName()] != nil; exists {
				return nil
			}
			if n := len(coll.parts); n >= 1024 {
				return errParam("partition number (%d) exceeds max configuration (1024), collection: %s", n, coll.name)
			}
			return nil
		})
		if err != nil || exists {
			return err
		}
		props := collProps(coll)
		props[propPartID] = strconv.FormatInt(c.allocID(), 10)
		return c.broadcastDDL(kindCreatePartition, req, props)
	})
}

func (s *service) DropPartition(ctx context.Context, req *milvuspb.DropPartitionRequest) (*commonpb.Status, error) {
	return s.ddl(ctx, req.GetDbName(), func(c *Cluster, db string) error {
		if req.GetPartitionName() == defaultPartition {
			return errParam("default partition cannot be deleted")
		}
		return c.collectionDDL(db, req.GetCollectionName(), kindDropPartition, req, func(coll *collection) (bool, error) {
			part := coll.parts[req.GetPartitionName()]
			if part == nil {
				return true, nil
			}
			if part.loaded {
				return false, errParam("partition cannot be dropped, partition is loaded, please release it first")
			}
			return false, nil
		})
	})
}

func (s *service) HasPartition(ctx context.Context, req *milvuspb.HasPartitionRequest) (*milvuspb.BoolResponse, error) {
	has := false
	_, err := s.c.cat.inspect(dbOf(ctx, req.GetDbName()), req.GetCollectionName(), func(coll *collection) error {
		has = coll.parts[req.GetPartitionName()] != nil
		return nil
	})
	if err != nil {
		return &milvuspb.BoolResponse{Status: statusOf(err)}, nil
	}
	return &milvuspb.BoolResponse{Status: okStatus(), Value: has}, nil
}

func (s *service) ShowPartitions(ctx context.Context, req *milvuspb.ShowPartitionsRequest) (*milvuspb.ShowPartitionsResponse, error) {
	cat := s.c.cat
	cat.mu.RLock()
	defer cat.mu.RUnlock()
	coll, err := cat.resolveLocked(dbOf(ctx, req.GetDbName()), req.GetCollectionName())
	if err != nil {
		return &milvuspb.ShowPartitionsResponse{Status: statusOf(err)}, nil
	}
	resp := &milvuspb.ShowPartitionsResponse{Status: okStatus()}
	want := map[string]bool{}
	for _, n := range req.GetPartitionNames() {
		if coll.parts[n] == nil {
			return &milvuspb.ShowPartitionsResponse{Status: statusOf(errPartitionNotFound(n))}, nil
		}
		want[n] = true
	}
	for _, p := range coll.sortedPartitionsLocked() {
		if len(want) > 0 && !want[p.name] {
			continue
		}
		pct := int64(0)
		if p.loaded {
			pct = 100
		}
		resp.PartitionNames = append(resp.PartitionNames, p.name)
		resp.PartitionIDs = append(resp.PartitionIDs, p.id)
		resp.CreatedTimestamps = append(resp.CreatedTimestamps, p.created)
		resp.CreatedUtcTimestamps = append(resp.CreatedUtcTimestamps, uint64(PhysicalTime(p.created).UnixMilli()))
		resp.InMemoryPercentages = append(resp.InMemoryPercentages, pct)
	}
	return resp, nil
}

func (s *service) GetPartitionStatistics(ctx context.Context, req *milvuspb.GetPartitionStatisticsRequest) (*milvuspb.GetPartitionStatisticsResponse, error) {
	var part *partition
	coll, err := s.c.cat.inspect(dbOf(ctx, req.GetDbName()), req.GetCollectionName(), func(coll *collection) error {
		if part = coll.parts[req.GetPartitionName()]; part == nil {
			return errPartitionNotFound(req.GetPartitionName())
		}
		return nil
	})
	if err != nil {
		return &milvuspb.GetPartitionStatisticsResponse{Status: statusOf(err)}, nil
	}
	d := coll.data
	d.mu.RLock()
	n := 0
	for r, alive := range d.alive {
		if alive && d.part[r] == part.id {
			n++
		}
	}
	d.mu.RUnlock()
	return &milvuspb.GetPartitionStatisticsResponse{Status: okStatus(), Stats: []*commonpb.KeyValuePair{{Key: "row_count", Value: strconv.Itoa(n)}}}, nil
}

// aliases

func (s *service) CreateAlias(ctx context.Context, req *milvuspb.CreateAliasRequest) (*commonpb.Status, error) {
	return s.ddl(ctx, req.GetDbName(), func(c *Cluster, db string) error {
		if err := validName("alias", req.GetAlias()); err != nil {
			return err
		}
		var props map[string]string
		err := func() error {
			c.cat.mu.RLock()
			defer c.cat.mu.RUnlock()
			d, coll, err := c.cat.collectionLocked(db, req.GetCollectionName())
			if err != nil {
				return err
			}
			if d.colls[req.GetAlias()] != nil {
				return newErr(codeAliasConflict, "alias and collection name conflict[database=%s][alias=%s]", db, req.GetAlias())
			}
			if cur, ok := d.aliases[req.GetAlias()]; ok {
				if cur == coll {
					return nil
				}
				return newErr(codeAliasExists, "alias already exist[database=%s][alias=%s]", db, req.GetAlias())
			}
			props = collProps(coll)
			return nil
		}()
		if err != nil || props == nil {
			return err
		}
		return c.broadcastDDL(kindCreateAlias, req, props)
	})
}

func (s *service) AlterAlias(ctx context.Context, req *milvuspb.AlterAliasRequest) (*commonpb.Status, error) {
	return s.ddl(ctx, req.GetDbName(), func(c *Cluster, db string) error {
		var props map[string]string
		err := func() error {
			c.cat.mu.RLock()
			defer c.cat.mu.RUnlock()
			d, coll, err := c.cat.collectionLocked(db, req.GetCollectionName())
			if err != nil {
				return err
			}
			if _, ok := d.aliases[req.GetAlias()]; !ok {
				return newErr(codeAliasNotFound, "alias not found[database=%s][alias=%s]", db, req.GetAlias())
			}
			props = collProps(coll)
			return nil
		}()
		if err != nil {
			return err
		}
		return c.broadcastDDL(kindAlterAlias, req, props)
	})
}

func (s *service) DropAlias(ctx context.Context, req *milvuspb.DropAliasRequest) (*commonpb.Status, error) {
	return s.ddl(ctx, req.GetDbName(), func(c *Cluster, db string) error {
		c.cat.mu.RLock()
		d := c.cat.dbs[db]
		exists := false
		if d != nil {
			_, exists = d.aliases[req.GetAlias()]
		}
		c.cat.mu.RUnlock()
		if d == nil {
			return errDatabaseNotFound(db)
		}
		if !exists {
			return nil
		}
		return c.broadcastDDL(kindDropAlias, req, map[string]string{propDB: db})
	})
}

func (s *service) DescribeAlias(ctx context.Context, req *milvuspb.DescribeAliasRequest) (*milvuspb.DescribeAliasResponse, error) {
	cat := s.c.cat
	db := dbOf(ctx, req.GetDbName())
	cat.mu.RLock()
	defer cat.mu.RUnlock()
	d := cat.dbs[db]
	if d == nil {
		return &milvuspb.DescribeAliasResponse{Status: statusOf(errDatabaseNotFound(db))}, nil
	}
	coll, ok := d.aliases[req.GetAlias()]
	if !ok {
		return &milvuspb.DescribeAliasResponse{Status: statusOf(newErr(codeAliasNotFound, "alias not found[database=%s][alias=%s]", db, req.GetAlias()))}, nil
	}
	return &milvuspb.DescribeAliasResponse{Status: okStatus(), DbName: db, Alias: req.GetAlias(), Collection: coll.name}, nil
}

func (s *service) ListAliases(ctx context.Context, req *milvuspb.ListAliasesRequest) (*milvuspb.ListAliasesResponse, error) {
	cat := s.c.cat
	db := dbOf(ctx, req.GetDbName())
	cat.mu.RLock()
	defer cat.mu.RUnlock()
	d := cat.dbs[db]
	if d == nil {
		return &milvuspb.ListAliasesResponse{Status: statusOf(errDatabaseNotFound(db))}, nil
	}
	resp := &milvuspb.ListAliasesResponse{Status: okStatus(), DbName: db, CollectionName: req.GetCollectionName()}
	if req.GetCollectionName() != "" {
		coll := d.colls[req.GetCollectionName()]
		if coll == nil {
			return &milvuspb.ListAliasesResponse{Status: statusOf(errCollectionNotFound(db, req.GetCollectionName()))}, nil
		}
		resp.Aliases = coll.aliasListLocked()
		return resp, nil
	}
	for a := range d.aliases {
		resp.Aliases = append(resp.Aliases, a)
	}
	sort.Strings(resp.Aliases)
	return resp, nil
}

// indexes

var vectorMetrics = map[string]bool{"L2": true, "IP": true, "COSINE": true}

func (s *service) CreateIndex(ctx context.Context, req *milvuspb.CreateIndexRequest) (*commonpb.Status, error) {
	return s.ddl(ctx, req.GetDbName(), func(c *Cluster, db string) error {
		var out *milvuspb.CreateIndexRequest
		var props map[string]string
		err := func() error {
			c.cat.mu.RLock()
			defer c.cat.mu.RUnlock()
			coll, err := c.cat.resolveLocked(db, req.GetCollectionName())
			if err != nil {
				return err
			}
			f := coll.byName[req.GetFieldName()]
			if f == nil || f.dynamic {
				return newErr(codeFieldNotFound, "cannot create index on non-existed field: %s: field not found[field=%s]", req.GetFieldName(), req.GetFieldName())
			}
			params := map[string]string{}
			for _, kv := range req.GetExtraParams() {
				params[kv.GetKey()] = kv.GetValue()
			}
			if raw, ok := params["params"]; ok && raw != "" {
				var m map[string]any
				if err := jsonUnmarshal(raw, &m); err != nil {
					return errParam("index params %q are not valid JSON: %v", raw, err)
				}
			}
			if f.isVector() {
				if params["index_type"] == "" {
					params["index_type"] = "AUTOINDEX"
				}
				m := strings.ToUpper(params["metric_type"])
				if m == "" {
					m = "COSINE"
				}
				if !vectorMetrics[m] {
					return errParam("float vector index does not support metric type: %s", params["metric_type"])
				}
				params["metric_type"] = m
			} else if params["index_type"] == "" {
				params["index_type"] = "INVERTED"
			}
			name := req.GetIndexName()
			if name == "" {
				name = f.name
			}
			kvs := make([]*commonpb.KeyValuePair, 0, len(params))
			for k, v := range params {
				kvs = append(kvs, &commonpb.KeyValuePair{Key: k, Value: v})
			}
			sort.Slice(kvs, func(i, j int) bool { return kvs[i].Key < kvs[j].Key })
			if cur := coll.indexOnLocked(f); cur != nil {
				if cur.name == name && samePairs(cur.params, kvs) {
					return nil
				}
				return errParam("at most one distinct index is allowed per field, field %s already has index %s", f.name, cur.name)
			}
			if other := coll.indexes[name]; other != nil {
				return errParam("index already exists, collection: %s, field: %s, index: %s", coll.name, other.field.name, name)
			}
			out = &milvuspb.CreateIndexRequest{DbName: db, CollectionName: coll.name, FieldName: f.name, IndexName: name, ExtraParams: kvs}
			props = collProps(coll)
			props[propIndexID] = strconv.FormatInt(c.allocID(), 10)
			return nil
		}()
		if err != nil || out == nil {
			return err
		}
		return c.broadcastDDL(kindCreateIndex, out, props)
	})
}

func samePairs(a, b []*commonpb.KeyValuePair) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]string{}
	for _, kv := range a {
		m[kv.GetKey()] = kv.GetValue()
	}
	for _, kv := range b {
		if v, ok := m[kv.GetKey()]; !ok || v != kv.GetValue() {
			return false
		}
	}
	return true
}

// matchIndexes returns the indexes a DescribeIndex-like request selects.
func matchIndexesLocked(coll *collection, fieldName, indexName string) []*indexInfo {
	var out []*indexInfo
	for _, idx := range coll.indexes {
		if indexName != "" && idx.name != indexName {
			continue
		}
		if fieldName != "" && idx.field.name != fieldName {
			continue
		}
		out = append(out, idx)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

func (s *service) DescribeIndex(ctx context.Context, req *milvuspb.DescribeIndexRequest) (*milvuspb.DescribeIndexResponse, error) {
	var idxs []*indexInfo
	coll, err := s.c.cat.inspect(dbOf(ctx, req.GetDbName()), req.GetCollectionName(), func(coll *collection) error {
		if idxs = matchIndexesLocked(coll, req.GetFieldName(), req.GetIndexName()); len(idxs) == 0 {
			return errIndexNotFound(coll.name)
		}
		return nil
	})
	if err != nil {
		return &milvuspb.DescribeIndexResponse{Status: statusOf(err)}, nil
	}
	rows := int64(coll.data.aliveRows())
	resp := &milvuspb.DescribeIndexResponse{Status: okStatus()}
	for _, idx := range idxs {
		resp.IndexDescriptions = append(resp.IndexDescriptions, &milvuspb.IndexDescription{
			IndexName: idx.name, IndexID: idx.id, Params: idx.params, FieldName: idx.field.name,
			IndexedRows: rows, TotalRows: rows, State: commonpb.IndexState_Finished,
		})
	}
	return resp, nil
}

// indexesExistLocked answers errIndexNotFound when no index of coll matches a
// DescribeIndex-like request. Caller holds the catalog's lock.
func indexesExistLocked(coll *collection, fieldName, indexName string) error {
	if len(matchIndexesLocked(coll, fieldName, indexName)) == 0 {
		return errIndexNotFound(coll.name)
	}
	return nil
}

func (s *service) GetIndexState(ctx context.Context, req *milvuspb.GetIndexStateRequest) (*milvuspb.GetIndexStateResponse, error) {
	_, err := s.c.cat.inspect(dbOf(ctx, req.GetDbName()), req.GetCollectionName(), func(coll *collection) error {
		return indexesExistLocked(coll, req.GetFieldName(), req.GetIndexName())
	})
	if err != nil {
		return &milvuspb.GetIndexStateResponse{Status: statusOf(err)}, nil
	}
	return &milvuspb.GetIndexStateResponse{Status: okStatus(), State: commonpb.IndexState_Finished}, nil
}

func (s *service) GetIndexBuildProgress(ctx context.Context, req *milvuspb.GetIndexBuildProgressRequest) (*milvuspb.GetIndexBuildProgressResponse, error) {
	coll, err := s.c.cat.inspect(dbOf(ctx, req.GetDbName()), req.GetCollectionName(), func(coll *collection) error {
		return indexesExistLocked(coll, req.GetFieldName(), req.GetIndexName())
	})
	if err != nil {
		return &milvuspb.GetIndexBuildProgressResponse{Status: statusOf(err)}, nil
	}
	rows := int64(coll.data.aliveRows())
	return &milvuspb.GetIndexBuildProgressResponse{Status: okStatus(), IndexedRows: rows, TotalRows: rows}, nil
}

func (s *service) DropIndex(ctx context.Context, req *milvuspb.DropIndexRequest) (*commonpb.Status, error) {
	return s.ddl(ctx, req.GetDbName(), func(c *Cluster, db string) error {
		var idxs []*indexInfo
		coll, err := c.cat.inspect(db, req.GetCollectionName(), func(coll *collection) error {
			if idxs = matchIndexesLocked(coll, req.GetFieldName(), req.GetIndexName()); len(idxs) == 0 {
				return nil
			}
			if loaded, _ := loadedLocked(coll, nil); loaded {
				return errParam("index cannot be dropped, collection is loaded, please release it first")
			}
			return nil
		})
		if err != nil || len(idxs) == 0 {
			return err
		}
		out := &milvuspb.DropIndexRequest{DbName: db, CollectionName: coll.name, FieldName: req.GetFieldName(), IndexName: idxs[0].name}
		return c.broadcastDDL(kindDropIndex, out, collProps(coll))
	})
}

// load state

func (c *Cluster) checkVectorIndexesLocked(coll *collection) error {
	for _, f := range coll.vectorFields() {
		if coll.indexOnLocked(f) == nil {
			return newErr(codeIndexNotFound, "there is no vector index on field: [%s], please create index firstly: collection=%s: index not found", f.name, coll.name)
		}
	}
	return nil
}

func (s *service) LoadCollection(ctx context.Context, req *milvuspb.LoadCollectionRequest) (*commonpb.Status, error) {
	return s.collectionDDL(ctx, req.GetDbName(), req.GetCollectionName(), kindLoadCollection, req, func(coll *collection) (bool, error) {
		if err := s.c.checkVectorIndexesLocked(coll); err != nil {
			return false, err
		}
		return coll.loaded, nil
	})
}

func (s *service) ReleaseCollection(ctx context.Context, req *milvuspb.ReleaseCollectionRequest) (*commonpb.Status, error) {
	return s.collectionDDL(ctx, req.GetDbName(), req.GetCollectionName(), kindReleaseCollection, req, nil)
}

func (s *service) LoadPartitions(ctx context.Context, req *milvuspb.LoadPartitionsRequest) (*commonpb.Status, error) {
	return s.collectionDDL(ctx, req.GetDbName(), req.GetCollectionName(), kindLoadPartitions, req, func(coll *collection) (bool, error) {
		if err := s.c.checkVectorIndexesLocked(coll); err != nil {
			return false, err
		}
		if len(req.GetPartitionNames()) == 0 {
			return false, errParam("partition names should not be empty")
		}
		return false, missingPartitionLocked(coll, req.GetPartitionNames())
	})
}

func (s *service) ReleasePartitions(ctx context.Context, req *milvuspb.ReleasePartitionsRequest) (*commonpb.Status, error) {
	return s.collectionDDL(ctx, req.GetDbName(), req.GetCollectionName(), kindReleasePartitions, req, func(coll *collection) (bool, error) {
		return false, missingPartitionLocked(coll, req.GetPartitionNames())
	})
}

// loadedLocked reports whether the named partitions (all when none) are loaded.
func loadedLocked(coll *collection, partitions []string) (bool, error) {
	if len(partitions) == 0 {
		if coll.loaded {
			return true, nil
		}
		for _, p := range coll.parts {
			if p.loaded {
				return true, nil
			}
		}
		return false, nil
	}
	for _, n := range partitions {
		p := coll.parts[n]
		if p == nil {
			return false, errPartitionNotFound(n)
		}
		if !p.loaded {
			return false, nil
		}
	}
	return true, nil
}

func (s *service) GetLoadState(ctx context.Context, req *milvuspb.GetLoadStateRequest) (*milvuspb.GetLoadStateResponse, error) {
	loaded := false
	_, err := s.c.cat.inspect(dbOf(ctx, req.GetDbName()), req.GetCollectionName(), func(coll *collection) (err error) {
		loaded, err = loadedLocked(coll, req.GetPartitionNames())
		return err
	})
	if err != nil {
		return &milvuspb.GetLoadStateResponse{Status: statusOf(err)}, nil
	}
	st := commonpb.LoadState_LoadStateNotLoad
	if loaded {
		st = commonpb.LoadState_LoadStateLoaded
	}
	return &milvuspb.GetLoadStateResponse{Status: okStatus(), State: st}, nil
}

func (s *service) GetLoadingProgress(ctx context.Context, req *milvuspb.GetLoadingProgressRequest) (*milvuspb.GetLoadingProgressResponse, error) {
	_, err := s.c.cat.inspect(dbOf(ctx, req.GetDbName()), req.GetCollectionName(), func(coll *collection) error {
		loaded, err := loadedLocked(coll, req.GetPartitionNames())
		if err == nil && !loaded {
			err = errCollectionNotLoaded(coll.name)
		}
		return err
	})
	if err != nil {
		return &milvuspb.GetLoadingProgressResponse{Status: statusOf(err)}, nil
	}
	return &milvuspb.GetLoadingProgressResponse{Status: okStatus(), Progress: 100, RefreshProgress: 100}, nil
}

// replication

func (s *service) UpdateReplicateConfiguration(ctx context.Context, req *milvuspb.UpdateReplicateConfigurationRequest) (*commonpb.Status, error) {
	return statusOf(s.c.updateReplicateConfiguration(ctx, req)), nil
}

// GetReplicateConfiguration answers, as Milvus 2.6 does, with the current
// configuration without the clusters' tokens
// (replicateutil.SanitizeReplicateConfiguration), and on a cluster never
// given one only once it has one (see awaitConfigured).
func (s *service) GetReplicateConfiguration(ctx context.Context, req *milvuspb.GetReplicateConfigurationRequest) (*milvuspb.GetReplicateConfigurationResponse, error) {
	cfg, err := s.c.awaitConfigured(ctx)
	if err != nil {
		return nil, err
	}
	out := proto.Clone(cfg).(*commonpb.ReplicateConfiguration)
	for _, mc := range out.GetClusters() {
		if mc.GetConnectionParam() != nil {
			mc.ConnectionParam.Token = ""
		}
	}
	return &milvuspb.GetReplicateConfigurationResponse{Status: okStatus(), Configuration: out}, nil
}

func (s *service) GetReplicateInfo(ctx context.Context, req *milvuspb.GetReplicateInfoRequest) (*milvuspb.GetReplicateInfoResponse, error) {
	// Milvus reads the configuration on the way in, so this too waits on a
	// cluster never configured.
	if _, err := s.c.awaitConfigured(ctx); err != nil {
		return nil, err
	}
	return s.c.getReplicateInfo(req)
}

func (s *service) CreateReplicateStream(stream milvuspb.MilvusService_CreateReplicateStreamServer) error {
	return s.c.serveReplicateStream(stream)
}

func (s *service) DumpMessages(req *milvuspb.DumpMessagesRequest, stream milvuspb.MilvusService_DumpMessagesServer) error {
	return s.c.dumpMessages(req, stream)
}

func jsonUnmarshal(s string, v any) error {
	dec := json.NewDecoder(strings.NewReader(s))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data")
	}
	return nil
}
