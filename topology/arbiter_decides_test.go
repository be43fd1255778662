package topology

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
)

// TestArbiterRefusesWhileAnotherProxyDecides: with Decides false an
// operator's change is refused before any cluster is called, with a
// reason that says why.
func TestArbiterRefusesWhileAnotherProxyDecides(t *testing.T) {
	a, b := startFake(t, "a"), startFake(t, "b")
	m, err := New(Options{Discovery: DiscoveryStatic, Clusters: []ClusterOptions{cluster(a, RoleLeader), cluster(b, RoleAlternative)}, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var decides atomic.Bool
	arb, err := NewArbiter(m, ArbiterOptions{Decides: decides.Load})
	if err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func(context.Context, string) (Change, error){
		"failover": arb.Failover, "switchover": arb.Switchover, "attach": arb.Attach,
	} {
		ch, err := call(context.Background(), "b")
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "does not decide") || ch.Result != ResultRefused {
			t.Errorf("%s while another proxy decides: %+v, %v", name, ch, err)
		}
	}
	decides.Store(true)
	if _, err := arb.Failover(context.Background(), "b"); err != nil && strings.Contains(err.Error(), "does not decide") {
		t.Errorf("failover refused once deciding: %v", err)
	}
}
