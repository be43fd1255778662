# Seeded chaos schedules of leader changes against the built binary
# (test/chaos). `make test` runs a short one (about a minute, every
# kind of step); `make chaos SECONDS=600` runs seeds one after another for
# that long with every kind of step and prints the failing seeds with the
# command that replays each. KINDS narrows the steps (comma-separated:
# switchover, failover, kill-leader, restart-sim, pause-replication,
# resume-replication, restart-proxy; or all); SEED and STEPS replay one.
SECONDS ?= 600
KINDS ?= all

.PHONY: chaos

chaos:
	MHP_CHAOS_SECONDS=$(SECONDS) MHP_CHAOS_KINDS=$(KINDS) $(if $(SEED),MHP_CHAOS_SEED=$(SEED)) $(if $(STEPS),MHP_CHAOS_STEPS=$(STEPS)) \
		$(GO) test -count=1 -timeout $$(( $(SECONDS) + 600 ))s -run TestChaos -v ./test/chaos/
