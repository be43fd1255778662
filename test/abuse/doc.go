// Package abuse proves that one client's ordinary or hostile behaviour
// never hurts another client of milvus-ha-proxy, and that the proxy's
// memory stays within its budget whatever a client sends.
//
// Every probe runs against the built `serve` binary in its own process,
// once per engine (relay and grpc), in front of a minimal Milvus backend
// (package backend: a grpc-go server with the milvus-proto types, in a
// process of its own too), all on loopback ports chosen at run time. A
// well-behaved bystander client measures its throughput, latency and
// errors before, during and after the probe, and the proxy's RSS is
// sampled from /proc/<pid>/status. The probes send raw
// HTTP/2 frames (golang.org/x/net/http2's Framer and hpack) where a
// well-behaved library would refuse to: Rapid Reset, CONTINUATION floods,
// HPACK bombs, oversized headers, lying length prefixes, zero windows,
// idle and never-reading connections.
//
// The suite is all in the _test files. `go test ./test/abuse` runs the
// short form (a couple of minutes); MHP_ABUSE_LONG=1 runs the durations
// and sizes of the original audit; MHP_ABUSE_HAPROXY=1 adds a column for
// HAProxy (h2 in front of the same backend) as a point of comparison;
// MHP_ABUSE_PROBES=regexp runs some probes only. See mk/abuse.mk.
package abuse
