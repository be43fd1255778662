package topology

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/consistency"
	"github.com/milvus-io/milvus-proto/go-api/v2/milvuspb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// describeTimeout bounds one DescribeCollection made for the cache.
const describeTimeout = 5 * time.Second

type collKey struct{ db, name string }

// collEntry is one cache slot. It is immutable once done is closed.
type collEntry struct {
	done    chan struct{}
	info    *CollectionInfo
	err     error
	epoch   uint64
	leader  string // the leader the entry was loaded under ("" for none)
	expires time.Time
}

// leaderOf names a snapshot's leader, "" when there is none.
func leaderOf(s *Snapshot) string {
	if s.Leader == nil {
		return ""
	}
	return s.Leader.ID
}

// collectionCache is a copy-on-write map: lookups are one atomic load and
// a map read, no lock and no allocation; misses (rare) copy the map under
// mu.
type collectionCache struct {
	mu sync.Mutex
	m  atomic.Pointer[map[collKey]*collEntry]
}

func (c *collectionCache) init() {
	empty := map[collKey]*collEntry{}
	c.m.Store(&empty)
}

func (c *collectionCache) get(k collKey) *collEntry { return (*c.m.Load())[k] }

// replace installs next for k if the slot still holds prev.
func (c *collectionCache) replace(k collKey, prev, next *collEntry) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := *c.m.Load()
	if cur[k] != prev {
		return false
	}
	nm := maps.Clone(cur)
	if next == nil {
		delete(nm, k)
	} else {
		nm[k] = next
	}
	c.m.Store(&nm)
	return true
}

func (c *collectionCache) dropDB(db string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	nm := maps.Clone(*c.m.Load())
	maps.DeleteFunc(nm, func(k collKey, _ *collEntry) bool { return k.db == db })
	c.m.Store(&nm)
}

func (c *collectionCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	empty := map[collKey]*collEntry{}
	c.m.Store(&empty)
}

// Collection returns what routing needs about a collection, from a cache
// filled by DescribeCollection on the leader (on an alternative while
// there is no leader), with the proxy's own credentials. Concurrent misses
// for the same collection share one call. A Milvus error status (e.g.
// collection not found) comes back as a *StatusError.
//
// Answers are cached per leader: an entry loaded under another leader or
// epoch is never used. Successes live for CollectionTTL, failures of every
// kind (error statuses, gRPC errors, timeouts, no cluster to ask) for
// CollectionFailureTTL, so that reads during backend trouble cost the
// leader one DescribeCollection per period instead of one per read.
func (m *Manager) Collection(ctx context.Context, db, name string) (CollectionInfo, error) {
	info, err := m.collection(ctx, db, name)
	if err != nil {
		return CollectionInfo{}, err
	}
	// A copy of the header: PChannels stays shared and must not be
	// modified by the caller.
	return *info, nil
}

// CachedCollection is Collection without calling out: the cached answer,
// success or failure, when there is a usable one (ok), else ok false and
// the caller must use Collection. It takes no lock and does not allocate,
// so the relay engine can route on its connection goroutines.
func (m *Manager) CachedCollection(db, name string) (info CollectionInfo, ok bool, err error) {
	k := collKey{consistency.NormalizeDB(db), name}
	e := m.colls.get(k)
	if e == nil || !m.usable(e, m.Snapshot()) {
		return CollectionInfo{}, false, nil
	}
	if e.err != nil {
		return CollectionInfo{}, true, e.err
	}
	return *e.info, true, nil
}

// usable reports whether a cache entry is finished, loaded under s's
// leader and epoch, and not expired. Pchannel names carry the leader's id,
// and a failure under one leader says nothing about the next: an entry
// from another leader (or none) is stale.
func (m *Manager) usable(e *collEntry, s *Snapshot) bool {
	select {
	case <-e.done:
	default:
		return false
	}
	return e.epoch == s.Epoch && e.leader == leaderOf(s) && m.opts.Now().Before(e.expires)
}

func (m *Manager) collection(ctx context.Context, db, name string) (*CollectionInfo, error) {
	k := collKey{consistency.NormalizeDB(db), name}
	for {
		s := m.Snapshot()
		e := m.colls.get(k)
		if e != nil {
			select {
			case <-e.done:
				if m.usable(e, s) {
					return e.info, e.err
				}
				// Expired or from another leader: load again.
			default:
				select {
				case <-e.done:
					return e.info, e.err
				case <-ctx.Done():
					return nil, status.FromContextError(ctx.Err()).Err()
				}
			}
		}
		next := &collEntry{done: make(chan struct{}), epoch: s.Epoch, leader: leaderOf(s)}
		if !m.colls.replace(k, e, next) {
			continue // someone else got there first; use theirs
		}
		if !m.spawn(func(ctx context.Context) { m.loadCollection(ctx, k, next, s) }) {
			next.err = status.Error(codes.Unavailable, "topology manager closed")
			close(next.done)
			m.colls.replace(k, next, nil)
			return nil, next.err
		}
	}
}

// InvalidateCollection drops a collection from the cache (after DDL);
// name "" drops every collection of db (after DropDatabase).
func (m *Manager) InvalidateCollection(db, name string) {
	db = consistency.NormalizeDB(db)
	if name == "" {
		m.colls.dropDB(db)
		return
	}
	k := collKey{db, name}
	if e := m.colls.get(k); e != nil {
		m.colls.replace(k, e, nil)
	}
}

// InvalidateCollections empties the cache (e.g. after a database drop).
func (m *Manager) InvalidateCollections() { m.colls.clear() }

// loadCollection fills one cache entry; it runs as a manager goroutine so
// one caller giving up does not fail the others waiting on it.
func (m *Manager) loadCollection(ctx context.Context, k collKey, e *collEntry, s *Snapshot) {
	ctx, cancel := context.WithTimeout(ctx, describeTimeout)
	defer cancel()
	e.info, e.err = m.describe(ctx, k, s)
	ttl := m.opts.CollectionTTL
	if e.err != nil {
		ttl = m.opts.CollectionFailureTTL
	}
	e.expires = m.opts.Now().Add(ttl)
	close(e.done)
	if e.err != nil && ttl <= 0 {
		m.colls.replace(k, e, nil)
	}
}

func (m *Manager) describe(ctx context.Context, k collKey, s *Snapshot) (*CollectionInfo, error) {
	c := s.Leader
	if c == nil {
		for _, x := range s.Clusters {
			if x.Role == RoleAlternative && x.Healthy && !x.Quarantined {
				c = x
				break
			}
		}
	}
	if c == nil {
		return nil, status.Errorf(codes.Unavailable, "describing collection %s.%s: no leader and no healthy alternative", k.db, k.name)
	}
	mb := m.members[c.ID]
	resp, err := mb.rpc.DescribeCollection(mb.outgoing(ctx, k.db), &milvuspb.DescribeCollectionRequest{
		DbName: k.db, CollectionName: k.name,
	})
	if err == nil {
		err = statusErr("DescribeCollection", c.ID, resp.GetStatus())
		if err != nil {
			return nil, err
		}
	}
	if err != nil {
		return nil, fmt.Errorf("topology: DescribeCollection %s.%s on %s: %w", k.db, k.name, c.ID, err)
	}
	mb.lastGood.Store(m.opts.Now().UnixNano())
	return &CollectionInfo{
		DB:               k.db,
		Name:             k.name,
		ConsistencyLevel: int32(resp.GetConsistencyLevel()),
		PChannels:        pchannelIndexes(resp.GetPhysicalChannelNames(), s.LeaderPChannels),
	}, nil
}

// pchannelIndexes maps physical channel names to leader pchannel indexes:
// the position in the leader's configured list, else the number after the
// last '_' ("<cluster>-rootcoord-dml_<i>"). nil (= all pchannels) when a
// name cannot be mapped: routing then asks more of a replica, never less.
func pchannelIndexes(names, leaderPCs []string) []int {
	if len(names) == 0 {
		return nil
	}
	out := make([]int, 0, len(names))
	for _, n := range names {
		i := slices.Index(leaderPCs, n)
		if i < 0 {
			u := strings.LastIndexByte(n, '_')
			if u < 0 {
				return nil
			}
			v, err := strconv.Atoi(n[u+1:])
			if err != nil || v < 0 {
				return nil
			}
			i = v
		}
		out = append(out, i)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
