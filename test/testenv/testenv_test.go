package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/milvus-io/milvus/client/v2/entity"
)

// TestStart: a leader and an alternative behind the proxy; a row written
// through the proxy is found by a Strong search, and a missing row is not.
func TestStart(t *testing.T) {
	e := Start(t, Options{Clusters: 2})
	if len(e.Sims) != 2 || e.Sims[0].ID() != "a" || e.Sims[1].ID() != "b" {
		t.Fatalf("sims %v, want a and b", e.Sims)
	}
	if v := Topology(t, e.App.AdminAddr()); v.Leader != "a" {
		t.Fatalf("leader %q, want a", v.Leader)
	}
	c := Connect(t, e.App.Addr(), nil)
	MakeCollection(t, c, "smoke")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Insert(ctx, c, "smoke", 1, 2); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id   int64
		want bool
	}{{1, true}, {2, true}, {3, false}} {
		found, err := SearchID(ctx, c, "smoke", tc.id, entity.ClStrong)
		if err != nil || found != tc.want {
			t.Errorf("SearchID(%d): %v, %v; want %v", tc.id, found, err, tc.want)
		}
	}
	if err := Search(ctx, c, "smoke", 1, entity.ClEventually); err != nil {
		t.Errorf("Search: %v", err)
	}
}
