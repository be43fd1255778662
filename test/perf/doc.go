// Package perf measures the shipped binary as users run it: `serve` with
// its default configuration (metrics on, tracing off) in a process of its
// own, side by side with HAProxy (h2 in front, h2 behind) and with no
// proxy at all, in front of a minimal Milvus backend in another process,
// under the same load from Go clients in the test process; and `serve`
// with replicate discovery in front of three simulated clusters joined by
// replication, its reads spread over them.
//
// The measurement is BenchmarkProxy (make bench-proxy); README.md's
// performance table comes from it. Every round measures every target one
// after the other, so that a loaded machine slows them alike; the table
// shows the median of the rounds.
package perf
