# HTTP/2 conformance and fuzzing of the relay engine's parsers.
# Included from the Makefile; `make test` runs both:
#   h2spec-deps  installs h2spec (github.com/summerwind/h2spec) into .bin;
#                proxy's TestH2Spec runs it against both engines (found
#                through $H2SPEC) and checks its failures against the
#                expected list in proxy/h2spec_test.go
#   test-fuzz    a short -fuzz run of each fuzz target of the parsers of
#                untrusted bytes (seed corpora in testdata/fuzz next to
#                each package); FUZZTIME per target
H2SPEC_VERSION ?= v2.2.1+incompatible
FUZZTIME ?= 5s
# package:target pairs.
FUZZ_TARGETS := ./proxy:FuzzScanRequest ./proxy/relay:FuzzMsgAssembler \
	./proxy/relay:FuzzHeaderReader ./proxy/relay:FuzzCheckRequest

.PHONY: h2spec-deps test-fuzz

h2spec-deps: $(BIN)/h2spec

$(BIN)/h2spec:
	GOBIN=$(BIN) $(GO) install github.com/summerwind/h2spec/cmd/h2spec@$(H2SPEC_VERSION)

test-fuzz:
	@for pf in $(FUZZ_TARGETS); do \
		p=$${pf%%:*}; f=$${pf#*:}; \
		echo "fuzz $$f in $$p for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) $$p || exit 1; \
	done
