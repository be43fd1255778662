package consistency

import (
	"strconv"
	"time"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/hybridts"
)

// Level is a Milvus consistency level; the values are those of
// commonpb.ConsistencyLevel.
type Level int32

// Levels.
const (
	Strong     Level = 0
	Session    Level = 1
	Bounded    Level = 2
	Eventually Level = 3
	Customized Level = 4
)

var levelNames = [...]string{"Strong", "Session", "Bounded", "Eventually", "Customized"}

func (l Level) String() string {
	if l >= 0 && int(l) < len(levelNames) {
		return levelNames[l]
	}
	return "Level(" + strconv.Itoa(int(l)) + ")"
}

// Guarantee timestamps below 3 are sentinels, not points in time.
const (
	// GuaranteeStrong (0) means "now" when Milvus parses it as a Strong
	// guarantee, and "nothing" under Session or Customized.
	GuaranteeStrong uint64 = 0
	// GuaranteeEventually (1) waits for nothing.
	GuaranteeEventually uint64 = 1
	// GuaranteeBounded (2) means "now minus the graceful time" under a
	// Strong-level guarantee.
	GuaranteeBounded uint64 = 2
)

// IsTimestamp reports whether a guarantee timestamp names a point in time
// rather than a sentinel.
func IsTimestamp(g uint64) bool { return g > GuaranteeBounded }

// ReadFields are the consistency fields of one Search, HybridSearch or
// Query request, as sent.
type ReadFields struct {
	Level      Level  // consistency_level
	Guarantee  uint64 // guarantee_timestamp
	UseDefault bool   // use_default_consistency
	// Iterator is set when the request's search_params/query_params say
	// iterator=true (a page of a search or query iterator).
	Iterator bool
}

// Demand is what a read asks for once Milvus's own rules are applied.
type Demand struct {
	// Level is the effective level: the collection's when the request
	// used the default, and the compatibility mapping of a Strong level
	// carrying a guarantee applied.
	Level Level
	// Guarantee is the client's own bound (a real timestamp, > 2) for
	// Session and Customized; 0 when it gave none.
	Guarantee uint64
	// Pinned marks an iterator page: its guarantee is also the MVCC
	// snapshot of the iteration, so R is exactly Guarantee and the
	// request must be forwarded unchanged.
	Pinned bool
}

// Resolve applies Milvus's interpretation of the consistency fields (see
// the package comment). collection is the collection's own level, used
// only when f.UseDefault.
func Resolve(f ReadFields, collection Level) Demand {
	g := f.Guarantee
	if f.Iterator && IsTimestamp(g) {
		return Demand{Level: Customized, Guarantee: g, Pinned: true}
	}
	level := f.Level
	if f.UseDefault {
		level = collection
	} else if level == Strong && g > 0 {
		// Milvus's compatibility path (parseGuaranteeTs): a Strong level
		// with a guarantee set is a guarantee-only request.
		switch {
		case g == GuaranteeBounded:
			level = Bounded
		case g == GuaranteeEventually:
			level = Eventually
		default:
			level = Customized
		}
	}
	switch level {
	case Strong, Bounded, Eventually:
		return Demand{Level: level}
	case Session:
		if IsTimestamp(g) {
			return Demand{Level: Session, Guarantee: g}
		}
		return Demand{Level: Session}
	default:
		// Customized, and any level this version does not know: Milvus
		// takes the guarantee as is, so a sentinel waits for nothing.
		if IsTimestamp(g) {
			return Demand{Level: Customized, Guarantee: g}
		}
		return Demand{Level: Customized}
	}
}

// Rules are the proxy's consistency settings (config "consistency").
type Rules struct {
	// BoundedStaleness is how far behind the leader's clock a Bounded read
	// may be (Milvus's common.gracefulTime, 5s by default).
	BoundedStaleness time.Duration
}

// Required returns the replicated timestamp R a non-Strong demand needs:
//
//	Session     max(client guarantee, session)
//	Bounded     leaderNow - BoundedStaleness
//	Eventually  0
//	Customized  client guarantee (0 when it sent a sentinel)
//
// session is the latest write (or DDL) timestamp this proxy saw from the
// client's session for the collection. leaderNow is the leader's current
// timestamp (an estimate is fine: Bounded is approximate by nature); 0 means
// unknown, and then the local clock stands in. Strong demands are the
// caller's business (the leader, or AllocTimestamp on it); Required returns
// 0 for them.
func (r Rules) Required(d Demand, session, leaderNow uint64) uint64 {
	switch d.Level {
	case Session:
		return max(d.Guarantee, session)
	case Bounded:
		if leaderNow == 0 {
			leaderNow = hybridts.Now()
		}
		r := hybridts.SubDuration(leaderNow, r.BoundedStaleness)
		if !IsTimestamp(r) {
			return GuaranteeBounded + 1
		}
		return r
	case Customized:
		return d.Guarantee
	default:
		return 0
	}
}

// Forward returns the consistency fields to send to the backend for a read
// that requires R (not Strong): Customized with guarantee R when R is a
// real timestamp, Eventually with guarantee 1 otherwise. It never yields a
// Customized guarantee of 0, 1 or 2, which Milvus would read as a sentinel.
func Forward(required uint64) (level Level, guarantee uint64) {
	if IsTimestamp(required) {
		return Customized, required
	}
	return Eventually, GuaranteeEventually
}
