package topology

import (
	"context"
	"testing"
)

// The hot-path accessors: one per request each. They must not allocate.

func benchManager(b *testing.B) *Manager {
	b.Helper()
	m, err := New(testOptions(DiscoveryStatic, ClusterOptions{ID: "a", URI: "127.0.0.1:1", Role: RoleLeader}))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}

func BenchmarkSnapshot(b *testing.B) {
	m := benchManager(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if m.Snapshot().Leader == nil {
				b.Fatal("no leader")
			}
		}
	})
}

func BenchmarkLeaderNow(b *testing.B) {
	m := benchManager(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.LeaderNow()
		}
	})
}

func BenchmarkCollectionHit(b *testing.B) {
	m := benchManager(b)
	// Seed the cache as a finished load would.
	e := &collEntry{done: make(chan struct{}), info: &CollectionInfo{Name: "docs", PChannels: []int{0}}, expires: m.opts.Now().Add(1 << 40)}
	close(e.done)
	m.colls.replace(collKey{"default", "docs"}, nil, e)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := m.Collection(ctx, "", "docs"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
