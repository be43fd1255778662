# The multi-proxy suite (test/multiproxy): three `serve` processes sharing
# one etcd arbiter (embedded in the test) in front of three simulated
# clusters. Its short form runs in `make test` (as part of `go test ./...`);
# this target adds the slower scenarios (the deciding proxy killed in the
# middle of a failover).

.PHONY: test-multiproxy-long

test-multiproxy-long:
	MHP_MULTIPROXY_LONG=1 $(GO) test -count=1 -v -timeout 10m ./test/multiproxy/

# The whole suite against Debian's etcd-server (etcd 3.4, the oldest the
# arbiter supports) instead of the embedded etcd; installs it when absent.
.PHONY: test-multiproxy-etcd34

test-multiproxy-etcd34:
	@command -v etcd >/dev/null || (apt-get update -qq && apt-get install -y -qq etcd-server)
	MHP_ETCD_BIN=$$(command -v etcd) MHP_MULTIPROXY_LONG=1 $(GO) test -count=1 -v -timeout 10m ./test/multiproxy/
