# The shipped binary's cost (test/perf): `serve` in its own process next to
# HAProxy (h2 -> h2) and no proxy, in front of a minimal Milvus backend, and
# `serve` with replicate discovery in front of three simulated clusters;
# alternating rounds, medians. Included from the Makefile; README.md's
# performance table comes from it.
#   make bench-proxy                       3 rounds of 3 s per target
#   MHP_PERF_ROUNDS=5 MHP_PERF_DURATION=5s make bench-proxy
#   MHP_PERF_CPUPROFILE=/tmp/serve.pprof make bench-proxy   (then go tool pprof)
# The table goes to $(PERF_TABLE) too.

PERF_TABLE ?= $(CURDIR)/.bench-proxy.md

.PHONY: bench-proxy

bench-proxy:
	MHP_PERF_TABLE=$(PERF_TABLE) $(GO) test -run '^$$' -bench '^BenchmarkProxy$$' -benchtime 1x -timeout 30m ./test/perf/
