package relay

import (
	"net"
	"sync"
	"time"
)

// PeerPenalty slows down the reconnections of a client whose connection
// was closed for abuse (GOAWAY ENHANCE_YOUR_CALM). Closing an abusive
// connection is not enough on its own: an attacker reconnects at once and
// every new connection gets its budgets afresh (resets, a header block up
// to the header list limit), so a reconnect loop still takes the CPU from
// every other client. For penaltyWindow after such a close, new
// connections from the same IP address are served one per interval,
// waiting for their turn before the proxy reads a byte (no CPU, one
// goroutine and a socket); one whose turn is more than penaltyMaxWait away
// is closed at once. Connections already open, the abuser's included,
// are not touched, nor are other addresses.
//
// Clients behind one NAT address share its penalty: their new connections
// wait too while one of them abuses, never their open ones. A nil
// *PeerPenalty penalises nobody.
type PeerPenalty struct {
	interval time.Duration
	mu       sync.Mutex
	peers    map[string]*peerState // by IP address
}

type peerState struct {
	until time.Time // the penalty ends
	next  time.Time // the next connection's turn
}

const (
	// penaltyWindow is how long an address stays penalised after its
	// last connection closed for abuse.
	penaltyWindow = 10 * time.Second
	// penaltyMaxWait bounds the wait of a penalised connection; later
	// turns are refused.
	penaltyMaxWait = time.Second
	// maxPenalised bounds the addresses remembered.
	maxPenalised = 4096
)

// NewPeerPenalty returns a PeerPenalty that serves a penalised address one
// new connection per interval, or nil (no penalty) when interval <= 0.
func NewPeerPenalty(interval time.Duration) *PeerPenalty {
	if interval <= 0 {
		return nil
	}
	return &PeerPenalty{interval: interval, peers: map[string]*peerState{}}
}

// peerIP is the address part of a remote address ("host:port").
func peerIP(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}

// Abused records that a connection from remote was closed for abuse.
func (p *PeerPenalty) Abused(remote string, now time.Time) {
	if p == nil {
		return
	}
	ip := peerIP(remote)
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.peers[ip]
	if st == nil {
		if len(p.peers) >= maxPenalised {
			for k, s := range p.peers {
				if now.After(s.until) {
					delete(p.peers, k)
				}
			}
			if len(p.peers) >= maxPenalised {
				return // too many at once: not remembered
			}
		}
		st = &peerState{}
		p.peers[ip] = st
	}
	st.until = now.Add(penaltyWindow)
}

// Admit reports how long a new connection from remote waits before it is
// served, or ok false when it is to be closed at once.
func (p *PeerPenalty) Admit(remote string, now time.Time) (wait time.Duration, ok bool) {
	if p == nil {
		return 0, true
	}
	ip := peerIP(remote)
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.peers[ip]
	if st == nil {
		return 0, true
	}
	if now.After(st.until) {
		delete(p.peers, ip)
		return 0, true
	}
	turn := st.next
	if turn.Before(now) {
		turn = now
	}
	if wait = turn.Sub(now); wait > penaltyMaxWait {
		return 0, false
	}
	st.next = turn.Add(p.interval)
	return wait, true
}

// Hold applies the penalty to a new connection: it waits for the
// connection's turn and reports whether to serve it.
func (p *PeerPenalty) Hold(nc net.Conn) bool {
	wait, ok := p.Admit(nc.RemoteAddr().String(), time.Now())
	if !ok {
		return false
	}
	if wait > 0 {
		time.Sleep(wait)
	}
	return true
}
