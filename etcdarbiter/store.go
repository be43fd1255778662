package etcdarbiter

import (
	"context"
	"fmt"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
)

// Store keeps the record of the latest leader change in the topology
// document, so that a decider elected after another died mid-change finds
// its steps. Save succeeds only while this proxy decides (the write is
// conditioned on its election key): an arbiter whose save fails must
// abandon the change without another call to a cluster.
type Store struct{ a *Arbiter }

// ChangeStore returns the arbiter's change store.
func (a *Arbiter) ChangeStore() *Store { return &Store{a: a} }

// Load returns the change record of the document in etcd, or nil.
func (s *Store) Load(ctx context.Context) (*topology.Change, error) {
	cctx, cancel := s.a.opCtx(ctx)
	defer cancel()
	resp, err := s.a.cli.Get(cctx, s.a.key(keyTopology))
	if err != nil {
		return nil, fmt.Errorf("reading the leader change record from etcd: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	d, err := decodeDocument(resp.Kvs[0].Value)
	if err != nil {
		return nil, err
	}
	return d.Change, nil
}

// Save writes c as the document's change record, with the routing of the
// local topology as it is now.
func (s *Store) Save(ctx context.Context, c *topology.Change) error {
	a := s.a
	rec := cloneChange(c)
	err := a.update(ctx, func(prev *Document) (*Document, bool) {
		next, ok := documentFrom(a.opts.Local.Snapshot())
		if !ok {
			next = prev.clone()
			if next == nil {
				next = &Document{}
			}
		} else {
			next.Epoch = docEpoch(prev)
			if prev == nil || prev.Leader != next.Leader {
				next.Epoch++
			}
		}
		next.Change = rec
		return next, true
	})
	if err != nil {
		return fmt.Errorf("saving the leader change record: %w", err)
	}
	return nil
}
