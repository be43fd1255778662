package relay

import (
	"testing"
	"time"
)

// TestPeerPenalty: after an abuse close, an address's new connections
// take turns one interval apart, a turn more than penaltyMaxWait away is
// refused, other addresses are not touched, and the penalty ends
// penaltyWindow after the last abuse close.
func TestPeerPenalty(t *testing.T) {
	t0 := time.Unix(1000, 0)
	p := NewPeerPenalty(100 * time.Millisecond)
	type step struct {
		abused bool // else Admit
		remote string
		at     time.Duration
		wait   time.Duration
		ok     bool
	}
	for i, s := range []step{
		{remote: "10.0.0.1:1", at: 0, ok: true}, // no penalty yet
		{abused: true, remote: "10.0.0.1:2", at: 0},
		{remote: "10.0.0.1:3", at: 0, ok: true},
		{remote: "10.0.0.1:4", at: 0, wait: 100 * time.Millisecond, ok: true},
		{remote: "10.0.0.2:4", at: 0, ok: true}, // another address
		{remote: "[::1]:4", at: 0, ok: true},
		{remote: "10.0.0.1:5", at: 50 * time.Millisecond, wait: 150 * time.Millisecond, ok: true},
	} {
		now := t0.Add(s.at)
		if s.abused {
			p.Abused(s.remote, now)
			continue
		}
		wait, ok := p.Admit(s.remote, now)
		if wait != s.wait || ok != s.ok {
			t.Fatalf("step %d (%s at %v): wait %v ok %v, want %v %v", i, s.remote, s.at, wait, ok, s.wait, s.ok)
		}
	}
	// Turns pile up to penaltyMaxWait; past it, refused at once.
	refused := 0
	for range 20 {
		if _, ok := p.Admit("10.0.0.1:9", t0.Add(100*time.Millisecond)); !ok {
			refused++
		}
	}
	if refused == 0 || refused == 20 {
		t.Fatalf("%d of 20 piled-up connections refused, want some but not all", refused)
	}
	// The penalty ends penaltyWindow after the last abuse close.
	if wait, ok := p.Admit("10.0.0.1:10", t0.Add(penaltyWindow+time.Millisecond)); wait != 0 || !ok {
		t.Fatalf("after the window: wait %v ok %v", wait, ok)
	}
	// Off: nil penalises nobody.
	off := NewPeerPenalty(0)
	off.Abused("10.0.0.1:1", t0)
	if wait, ok := off.Admit("10.0.0.1:2", t0); wait != 0 || !ok {
		t.Fatalf("off: wait %v ok %v", wait, ok)
	}
}
