package topology

import (
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	memdb "github.com/hashicorp/go-memdb"
)

// The registry is a go-memdb database: one table of cluster records and a
// one-row meta table (epoch, leader, failover state). Writers serialise on
// registry.mu, change records copy-on-write inside a memdb transaction,
// then derive an immutable Snapshot and publish it atomically. Readers
// never touch the database: they load the published Snapshot.

const (
	tableClusters = "clusters"
	tableMeta     = "meta"
	metaKey       = "meta"
)

// clusterRecord is one cluster's registry row. Rows are never modified in
// place: an update copies the row, changes the copy and inserts it.
type clusterRecord struct {
	ID    string
	Order int
	URI   string
	Role  Role
	// StaticRole is the role from the options.
	StaticRole Role

	Healthy      bool
	HealthReason string
	Breaker      BreakerState

	Quarantined      bool
	QuarantineReason string

	Checkpoints      []uint64
	CheckpointsKnown bool
	CheckpointsAt    time.Time
	LagReason        string

	Salvage []uint64

	// PChannels are this cluster's own pchannel names as the replicate
	// configuration lists them (index i replicates the leader's i-th).
	PChannels []string
	// ClaimsPrimary: its own replicate configuration names it the source.
	ClaimsPrimary bool
	// Target: a replication target of the leader, whose checkpoints are
	// polled (alternatives and standbys).
	Target bool
}

// equal compares two records field by field (slices by content; times
// including their monotonic reading, which can only report a change that
// is not one).
func (r *clusterRecord) equal(o *clusterRecord) bool { return reflect.DeepEqual(r, o) }

func (r *clusterRecord) clone() *clusterRecord {
	c := *r
	c.Checkpoints = slices.Clone(r.Checkpoints)
	c.Salvage = slices.Clone(r.Salvage)
	c.PChannels = slices.Clone(r.PChannels)
	return &c
}

// metaRecord holds the registry-wide state.
type metaRecord struct {
	Key      string
	Epoch    uint64
	LeaderID string
	// FailingOver holds writes: no leader is handed out meanwhile.
	FailingOver bool
	HoldReason  string
	HoldSince   time.Time
	// LostLeaderID is the leader that was lost when the failover began.
	LostLeaderID string
	LeaderLostAt time.Time
	// DiscoveryError is the last discovery failure ("" after a success).
	DiscoveryError string
	// LeaderPChannels are the leader's pchannel names, in configuration
	// order: index i in checkpoints and CollectionInfo.PChannels.
	LeaderPChannels []string
}

func (r *metaRecord) equal(o *metaRecord) bool { return reflect.DeepEqual(r, o) }

func (r *metaRecord) clone() *metaRecord {
	c := *r
	c.LeaderPChannels = slices.Clone(r.LeaderPChannels)
	return &c
}

func registrySchema() *memdb.DBSchema {
	return &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
		tableClusters: {
			Name: tableClusters,
			Indexes: map[string]*memdb.IndexSchema{
				"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
			},
		},
		tableMeta: {
			Name: tableMeta,
			Indexes: map[string]*memdb.IndexSchema{
				"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Key"}},
			},
		},
	}}
}

// registry owns the database and the published snapshot.
type registry struct {
	db    *memdb.MemDB
	now   func() time.Time
	lives map[string]*member // fixed at construction; read-only afterwards

	mu      sync.Mutex // serialises writers: update + publish
	snap    atomic.Pointer[Snapshot]
	changed atomic.Pointer[chan struct{}]
}

func newRegistry(now func() time.Time, records []*clusterRecord, lives map[string]*member) (*registry, error) {
	db, err := memdb.NewMemDB(registrySchema())
	if err != nil {
		return nil, fmt.Errorf("topology: creating registry: %w", err)
	}
	r := &registry{db: db, now: now, lives: lives}
	ch := make(chan struct{})
	r.changed.Store(&ch)
	err = r.update(func(tx *regTxn) error {
		for _, rec := range records {
			if err := tx.putCluster(rec); err != nil {
				return err
			}
		}
		return tx.putMeta(&metaRecord{Key: metaKey})
	})
	return r, err
}

// regTxn is a write transaction with typed accessors. dirty records
// whether anything actually changed, so a no-op update publishes nothing.
type regTxn struct {
	txn   *memdb.Txn
	dirty bool
}

func (t *regTxn) cluster(id string) *clusterRecord {
	raw, err := t.txn.First(tableClusters, "id", id)
	if err != nil || raw == nil {
		return nil
	}
	return raw.(*clusterRecord)
}

// clusters returns every record in config order.
func (t *regTxn) clusters() []*clusterRecord {
	it, err := t.txn.Get(tableClusters, "id")
	if err != nil {
		return nil
	}
	var out []*clusterRecord
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*clusterRecord))
	}
	slices.SortFunc(out, func(a, b *clusterRecord) int { return a.Order - b.Order })
	return out
}

func (t *regTxn) putCluster(r *clusterRecord) error {
	if err := t.txn.Insert(tableClusters, r); err != nil {
		return fmt.Errorf("topology: storing cluster %q: %w", r.ID, err)
	}
	t.dirty = true
	return nil
}

// modifyCluster copies the record, applies fn and stores the copy when it
// differs.
func (t *regTxn) modifyCluster(id string, fn func(*clusterRecord)) error {
	cur := t.cluster(id)
	if cur == nil {
		return fmt.Errorf("topology: unknown cluster %q", id)
	}
	next := cur.clone()
	fn(next)
	if cur.equal(next) {
		return nil
	}
	return t.putCluster(next)
}

func (t *regTxn) meta() *metaRecord {
	raw, err := t.txn.First(tableMeta, "id", metaKey)
	if err != nil || raw == nil {
		return &metaRecord{Key: metaKey}
	}
	return raw.(*metaRecord)
}

func (t *regTxn) putMeta(m *metaRecord) error {
	if err := t.txn.Insert(tableMeta, m); err != nil {
		return fmt.Errorf("topology: storing meta: %w", err)
	}
	t.dirty = true
	return nil
}

func (t *regTxn) modifyMeta(fn func(*metaRecord)) error {
	cur := t.meta()
	next := cur.clone()
	fn(next)
	if cur.equal(next) {
		return nil
	}
	return t.putMeta(next)
}

// update runs fn in a write transaction; on success it commits and
// publishes a new snapshot. fn returning an error aborts everything.
func (r *registry) update(fn func(tx *regTxn) error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	txn := r.db.Txn(true)
	tx := &regTxn{txn: txn}
	if err := fn(tx); err != nil {
		txn.Abort()
		return err
	}
	txn.Commit()
	if tx.dirty {
		r.publishLocked()
	}
	return nil
}

// read runs fn on a consistent read-only view of the registry.
func (r *registry) read(fn func(tx *regTxn)) {
	txn := r.db.Txn(false)
	defer txn.Abort()
	fn(&regTxn{txn: txn})
}

// publishLocked derives the snapshot from the committed registry, stores
// it, and then wakes the watchers: a watcher that took the channel before
// reading the snapshot therefore never misses a change.
func (r *registry) publishLocked() {
	var s *Snapshot
	r.read(func(tx *regTxn) { s = r.build(tx) })
	r.snap.Store(s)
	next := make(chan struct{})
	old := r.changed.Swap(&next)
	close(*old)
}

func (r *registry) build(tx *regTxn) *Snapshot {
	meta := tx.meta()
	recs := tx.clusters()
	s := &Snapshot{
		Epoch:           meta.Epoch,
		FailingOver:     meta.FailingOver,
		HoldReason:      meta.HoldReason,
		HoldSince:       meta.HoldSince,
		LeaderLostAt:    meta.LeaderLostAt,
		LostLeader:      meta.LostLeaderID,
		DiscoveryError:  meta.DiscoveryError,
		LeaderPChannels: meta.LeaderPChannels,
		PublishedAt:     r.now(),
		Clusters:        make([]*Cluster, 0, len(recs)),
	}
	for _, rec := range recs {
		lv := r.lives[rec.ID]
		c := &Cluster{
			ID:               rec.ID,
			URI:              rec.URI,
			Role:             rec.Role,
			Order:            rec.Order,
			Healthy:          rec.Healthy,
			HealthReason:     rec.HealthReason,
			Breaker:          rec.Breaker,
			Quarantined:      rec.Quarantined,
			QuarantineReason: rec.QuarantineReason,
			Checkpoints:      rec.Checkpoints,
			CheckpointsKnown: rec.CheckpointsKnown,
			CheckpointsAt:    rec.CheckpointsAt,
			LagReason:        rec.LagReason,
			Salvage:          rec.Salvage,
			PChannels:        rec.PChannels,
			Target:           rec.Target,
			ClaimsPrimary:    rec.ClaimsPrimary,
		}
		if lv != nil {
			c.Conn = lv.conn
			c.Outstanding = lv.outstanding
			c.Served = lv.served
		}
		s.Clusters = append(s.Clusters, c)
		if rec.Role == RoleLeader && !meta.FailingOver && rec.ID == meta.LeaderID {
			s.Leader = c
		}
	}
	return s
}
