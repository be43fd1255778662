package telemetry

import (
	"go.opentelemetry.io/otel/attribute"
)

// Span attribute keys of a proxied call's routing decision. The proxy sets
// them on its span; RouteAttributes builds the set.
const (
	// AttrConsistencyLevel is the level the read was served at (Strong,
	// Session, Bounded, Eventually, Customized).
	AttrConsistencyLevel = attribute.Key("milvus_ha.consistency_level")
	// AttrRequiredTimestamp is the hybrid timestamp the serving cluster had
	// to cover (0 for Eventually and for writes).
	AttrRequiredTimestamp = attribute.Key("milvus_ha.required_timestamp")
	// AttrCluster is the id of the cluster chosen.
	AttrCluster = attribute.Key("milvus_ha.cluster")
	// AttrRole is that cluster's role.
	AttrRole = attribute.Key("milvus_ha.role")
	// AttrRouteReason is why it was chosen (the Read* constants for reads).
	AttrRouteReason = attribute.Key("milvus_ha.route_reason")
	// AttrClass is the routing class (read, write, ddl...).
	AttrClass = attribute.Key("milvus_ha.class")
)

// Route is a routing decision as traces record it.
type Route struct {
	Class             string
	ConsistencyLevel  string
	RequiredTimestamp uint64
	Cluster           string
	Role              string
	Reason            string
}

// Attributes returns the span attributes of r; empty fields are left out.
func (r Route) Attributes() []attribute.KeyValue {
	out := make([]attribute.KeyValue, 0, 6)
	add := func(k attribute.Key, v string) {
		if v != "" {
			out = append(out, k.String(v))
		}
	}
	add(AttrClass, r.Class)
	add(AttrConsistencyLevel, r.ConsistencyLevel)
	if r.RequiredTimestamp != 0 {
		// Hybrid timestamps are physical_ms<<18|logical: below 2^63 for
		// hundreds of years, so int64 holds them exactly.
		out = append(out, AttrRequiredTimestamp.Int64(int64(r.RequiredTimestamp)))
	}
	add(AttrCluster, r.Cluster)
	add(AttrRole, r.Role)
	add(AttrRouteReason, r.Reason)
	return out
}
