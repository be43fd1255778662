// Package hybridts is the one definition of Milvus's hybrid timestamp
// (TSO) layout in this repository: ts = physical_ms << 18 | logical, as
// Milvus's pkg/util/tsoutil (ComposeTS, ParseTS, AddPhysicalDurationOnTs)
// defines it. Every package that builds, splits or moves a timestamp uses
// these functions instead of its own shifts.
package hybridts

import "time"

// LogicalBits is the width of the logical counter in a Milvus hybrid
// timestamp: ts = physical_ms << LogicalBits | logical.
const LogicalBits = 18

// logicalMask selects the logical counter.
const logicalMask = 1<<LogicalBits - 1

// Compose builds a hybrid timestamp from milliseconds since the Unix epoch
// and a logical counter (only its low 18 bits are kept).
func Compose(physicalMs int64, logical uint32) uint64 {
	return uint64(physicalMs)<<LogicalBits | uint64(logical)&logicalMask
}

// FromTime returns the hybrid timestamp of t with logical counter 0.
func FromTime(t time.Time) uint64 { return Compose(t.UnixMilli(), 0) }

// Now returns the hybrid timestamp of the local clock, logical counter 0.
func Now() uint64 { return FromTime(time.Now()) }

// Physical returns the physical part of ts: milliseconds since the epoch.
func Physical(ts uint64) int64 { return int64(ts >> LogicalBits) }

// Logical returns the logical counter of ts.
func Logical(ts uint64) uint32 { return uint32(ts & logicalMask) }

// Time returns the physical part of ts as a time.
func Time(ts uint64) time.Time { return time.UnixMilli(Physical(ts)) }

// AddDuration moves ts forward by d (whole milliseconds), keeping its
// logical counter, as Milvus's tsoutil.AddPhysicalDurationOnTs does. A
// negative d moves it back; see SubDuration for the floor.
func AddDuration(ts uint64, d time.Duration) uint64 {
	if d < 0 {
		return SubDuration(ts, -d)
	}
	return Compose(Physical(ts)+d.Milliseconds(), Logical(ts))
}

// SubDuration moves ts back by d (whole milliseconds), keeping its logical
// counter. It never goes below the epoch: a result that would be negative
// is 0.
func SubDuration(ts uint64, d time.Duration) uint64 {
	if d < 0 {
		return AddDuration(ts, -d)
	}
	p := Physical(ts) - d.Milliseconds()
	if p < 0 {
		return 0
	}
	return Compose(p, Logical(ts))
}

// Sub returns how far a is ahead of b in physical time (negative when a is
// behind), at millisecond resolution; logical counters are ignored.
func Sub(a, b uint64) time.Duration {
	return time.Duration(Physical(a)-Physical(b)) * time.Millisecond
}
