# The abuse suite (test/abuse): the built `serve` binary, both engines, in
# front of a minimal Milvus backend, under hostile and careless clients,
# with a well-behaved client measuring beside each probe.
# Included from the Makefile. The short form runs in `make test` (as part
# of `go test ./...`); these targets run it on its own:
#   make test-abuse          short form, with the results table
#   make test-abuse-long     the audit's durations and sizes (about 10 min)
#   make test-abuse-haproxy  short form plus HAProxy as a point of comparison
# MHP_ABUSE_PROBES=regexp runs some probes only; MHP_ABUSE_STRICT=1 fails on
# known failures too; MHP_ABUSE_QPS sets the bystander's rate (0: as fast
# as it can). The table goes to $(ABUSE_TABLE).

ABUSE_TABLE ?= $(CURDIR)/.abuse-table.md
ABUSE_GOTEST = $(GO) test -count=1 -v -run '^TestAbuse$$' ./test/abuse/

.PHONY: test-abuse test-abuse-long test-abuse-haproxy

test-abuse:
	MHP_ABUSE_TABLE=$(ABUSE_TABLE) $(ABUSE_GOTEST) -timeout 15m
	@cat $(ABUSE_TABLE)

test-abuse-long:
	MHP_ABUSE_LONG=1 MHP_ABUSE_TABLE=$(ABUSE_TABLE) $(ABUSE_GOTEST) -timeout 60m
	@cat $(ABUSE_TABLE)

test-abuse-haproxy:
	MHP_ABUSE_HAPROXY=1 MHP_ABUSE_TABLE=$(ABUSE_TABLE) $(ABUSE_GOTEST) -timeout 20m
	@cat $(ABUSE_TABLE)
