# The multi-proxy suite (test/multiproxy): three `serve` processes sharing
# one etcd arbiter (embedded in the test) in front of three simulated
# clusters. Its short form runs in `make test` (as part of `go test ./...`);
# this target adds the slower scenarios (the deciding proxy killed in the
# middle of a failover).

.PHONY: test-multiproxy-long

test-multiproxy-long:
	MHP_MULTIPROXY_LONG=1 $(GO) test -count=1 -v -timeout 10m ./test/multiproxy/
