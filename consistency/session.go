package consistency

import (
	"hash/maphash"
	"sync"
)

// DefaultDatabase is the database Milvus uses when a request names none.
const DefaultDatabase = "default"

// NormalizeDB maps the empty database name (and a missing dbname header)
// to "default", as Milvus does.
func NormalizeDB(db string) string {
	if db == "" {
		return DefaultDatabase
	}
	return db
}

// Tracker remembers, per client session, the timestamp of the last write
// it made to each collection and of the last DDL it made in each database,
// so that a Session read can demand them.
//
// Memory is bounded by an LRU of at most capacity entries, split over
// shards so that concurrent sessions rarely share a lock. LRU rather than
// TTL: a TTL bounds age, not memory (a burst of short sessions can still
// grow the map without limit), and expiring by age is unsafe anyway unless
// the TTL exceeds the worst replication lag, which nobody knows. Eviction
// is made safe instead: each shard keeps a floor, the highest timestamp it
// ever evicted, and every lookup returns at least that floor. A forgotten
// write therefore still constrains reads (conservatively, for every session
// hashed to that shard); since the LRU evicts the coldest entries, the floor
// is old and alternatives have normally replicated past it already, so the
// conservatism costs nothing in practice.
//
// A Tracker is safe for concurrent use. Record and lookup take one shard
// mutex for a map access and a list splice, and allocate only when a new
// entry is created.
type Tracker struct {
	seed   maphash.Seed
	shards [trackerShards]trackerShard
}

const trackerShards = 32

// DefaultTrackerCapacity is the capacity NewTracker uses for capacity <= 0:
// about 20 MB in the worst case (long names), far less in practice.
const DefaultTrackerCapacity = 100_000

type trackerKey struct {
	session, db, collection string // collection "" = the database's DDL entry
}

type trackerEntry struct {
	key        trackerKey
	ts         uint64
	prev, next *trackerEntry // LRU list, most recent first
}

type trackerShard struct {
	mu    sync.Mutex
	m     map[trackerKey]*trackerEntry
	head  trackerEntry // sentinel: head.next is the most recent
	cap   int
	floor uint64 // highest ts evicted from this shard
	_     [64]byte
}

// NewTracker returns a Tracker holding at most capacity entries (rounded up
// to a multiple of the shard count).
func NewTracker(capacity int) *Tracker {
	if capacity <= 0 {
		capacity = DefaultTrackerCapacity
	}
	per := (capacity + trackerShards - 1) / trackerShards
	t := &Tracker{seed: maphash.MakeSeed()}
	for i := range t.shards {
		s := &t.shards[i]
		s.m = make(map[trackerKey]*trackerEntry)
		s.head.next, s.head.prev = &s.head, &s.head
		s.cap = per
	}
	return t
}

// RecordWrite notes that session wrote to db.collection at ts (from
// MutationResult.timestamp). Timestamps only move forward.
func (t *Tracker) RecordWrite(session, db, collection string, ts uint64) {
	if collection == "" || ts == 0 {
		return
	}
	t.record(trackerKey{session, NormalizeDB(db), collection}, ts)
}

// LastWrite returns the timestamp of session's last write to db.collection
// (or a conservative bound on it), 0 when there is none.
func (t *Tracker) LastWrite(session, db, collection string) uint64 {
	if collection == "" {
		return 0
	}
	return t.lookup(trackerKey{session, NormalizeDB(db), collection})
}

// RecordDDL notes that session changed the schema of db at ts (a leader
// timestamp taken after the DDL completed).
func (t *Tracker) RecordDDL(session, db string, ts uint64) {
	if ts == 0 {
		return
	}
	t.record(trackerKey{session, NormalizeDB(db), ""}, ts)
}

// LastDDL returns the timestamp of session's last DDL in db (or a
// conservative bound on it), 0 when there is none.
func (t *Tracker) LastDDL(session, db string) uint64 {
	return t.lookup(trackerKey{session, NormalizeDB(db), ""})
}

// Session returns what a Session read of db.collection must cover for this
// session: its last write to the collection and its last DDL in the
// database, whichever is later. collection "" asks for the DDL only (reads
// of database metadata).
func (t *Tracker) Session(session, db, collection string) uint64 {
	db = NormalizeDB(db)
	ddl := t.lookup(trackerKey{session, db, ""})
	if collection == "" {
		return ddl
	}
	return max(ddl, t.lookup(trackerKey{session, db, collection}))
}

// Len returns the number of entries held.
func (t *Tracker) Len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

func (t *Tracker) shard(k *trackerKey) *trackerShard {
	// The session alone picks the shard: it spreads load just as well and
	// keeps one session's entries (and its eviction floor) together.
	return &t.shards[maphash.String(t.seed, k.session)%trackerShards]
}

func (t *Tracker) record(k trackerKey, ts uint64) {
	s := t.shard(&k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[k]; ok {
		if ts > e.ts {
			e.ts = ts
		}
		s.moveToFront(e)
		return
	}
	for len(s.m) >= s.cap {
		s.evictOldest()
	}
	e := &trackerEntry{key: k, ts: ts}
	s.m[k] = e
	s.pushFront(e)
}

func (t *Tracker) lookup(k trackerKey) uint64 {
	s := t.shard(&k)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[k]
	if !ok {
		return s.floor
	}
	s.moveToFront(e)
	return max(e.ts, s.floor)
}

func (s *trackerShard) pushFront(e *trackerEntry) {
	e.prev = &s.head
	e.next = s.head.next
	e.next.prev = e
	s.head.next = e
}

func (s *trackerShard) moveToFront(e *trackerEntry) {
	if s.head.next == e {
		return
	}
	e.prev.next = e.next
	e.next.prev = e.prev
	s.pushFront(e)
}

func (s *trackerShard) evictOldest() {
	e := s.head.prev
	if e == &s.head {
		return
	}
	e.prev.next = &s.head
	s.head.prev = e.prev
	delete(s.m, e.key)
	if e.ts > s.floor {
		s.floor = e.ts
	}
}
