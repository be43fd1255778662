package etcdarbiter

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/topology"
)

// Keys under the prefix (arbiter.etcd.prefix):
//
//	<prefix>/election/<lease>  concurrency.Election: the oldest key decides
//	<prefix>/topology          Document, written by the decider only
//	<prefix>/proxies/<id>      ProxyRecord of every running proxy, on its lease
const (
	keyElection = "/election"
	keyTopology = "/topology"
	keyProxies  = "/proxies/"
)

// Document is the topology every proxy routes by. Only the decider writes
// it, in a transaction that succeeds only while its election key exists,
// so a proxy that lost its lease (and with it the right to decide) can no
// longer change it.
type Document struct {
	// Epoch counts leader changes decided through etcd. It never goes
	// back: each decider continues from the document it found.
	Epoch uint64 `json:"epoch"`
	// Leader is the cluster that takes writes; during a change, the one
	// being replaced until the new one is installed.
	Leader string `json:"leader"`
	// Hold: writes are held because a leader change is under way (the
	// decider holds them too); HoldReason says why.
	Hold       bool   `json:"hold,omitempty"`
	HoldReason string `json:"hold_reason,omitempty"`
	// Roles are the clusters' roles as the decider sees them.
	Roles map[string]string `json:"roles,omitempty"`
	// Quarantined alternatives get no reads, with the reason.
	Quarantined map[string]string `json:"quarantined,omitempty"`
	// Change is the record of the latest leader change (its steps, what
	// each cluster answered), saved as it runs: a decider elected after
	// one died reads it to finish or roll back what was under way.
	Change *topology.Change `json:"change,omitempty"`
	// Decider is the proxy that wrote this document, DeciderEpoch its
	// own topology epoch then (they differ between proxies: each counts
	// the changes it saw since it started).
	Decider      string    `json:"decider"`
	DeciderEpoch uint64    `json:"decider_epoch"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// sameRouting reports whether two documents route alike (everything but
// the change record and who wrote it when).
func (d *Document) sameRouting(o *Document) bool {
	if d == nil || o == nil {
		return d == o
	}
	return d.Epoch == o.Epoch && d.Leader == o.Leader && d.Hold == o.Hold && d.HoldReason == o.HoldReason &&
		maps.Equal(d.Roles, o.Roles) && maps.Equal(d.Quarantined, o.Quarantined)
}

func (d *Document) clone() *Document {
	if d == nil {
		return nil
	}
	c := *d
	c.Roles = maps.Clone(d.Roles)
	c.Quarantined = maps.Clone(d.Quarantined)
	c.Change = cloneChange(d.Change)
	return &c
}

// cloneChange deep-copies a change record through its JSON form, the form
// it is stored in.
func cloneChange(c *topology.Change) *topology.Change {
	if c == nil {
		return nil
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil
	}
	var out topology.Change
	if json.Unmarshal(b, &out) != nil {
		return nil
	}
	return &out
}

func decodeDocument(b []byte) (*Document, error) {
	var d Document
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("decoding the topology document: %w", err)
	}
	return &d, nil
}

// documentFrom describes the decider's snapshot. ok is false while the
// snapshot names no leader (discovery has not found one): there is
// nothing to route by yet.
func documentFrom(s *topology.Snapshot) (d *Document, ok bool) {
	d = &Document{DeciderEpoch: s.Epoch, Roles: map[string]string{}}
	switch {
	case s.FailingOver && s.LostLeader != "":
		d.Leader, d.Hold, d.HoldReason = s.LostLeader, true, s.HoldReason
	case s.FailingOver:
		return nil, false
	case s.Leader != nil:
		d.Leader = s.Leader.ID
	default:
		return nil, false
	}
	for _, c := range s.Clusters {
		d.Roles[c.ID] = string(c.Role)
		if c.Quarantined {
			if d.Quarantined == nil {
				d.Quarantined = map[string]string{}
			}
			d.Quarantined[c.ID] = c.QuarantineReason
		}
	}
	return d, true
}

// ProxyRecord is what each proxy says about itself, refreshed every
// heartbeat on its own lease (it disappears when the proxy does).
type ProxyRecord struct {
	ID string `json:"id"`
	// Address is where its admin API is reached (forwarded requests).
	Address string `json:"address"`
	// Epoch is the document epoch it last applied; Leader its leader.
	Epoch  uint64 `json:"epoch"`
	Leader string `json:"leader"`
	// Deciding is set while it is the decider.
	Deciding bool `json:"deciding"`
	// Heartbeat is when it wrote this record (its own clock).
	Heartbeat time.Time `json:"heartbeat"`
}

func sortRecords(rs []ProxyRecord) {
	slices.SortFunc(rs, func(a, b ProxyRecord) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
}
