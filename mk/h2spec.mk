# HTTP/2 conformance and fuzzing of the relay engine's parsers.
# Included from the Makefile; `make test` runs both:
#   h2spec-deps  installs h2spec (github.com/summerwind/h2spec) into .bin;
#                proxy's TestH2Spec runs it against both engines (found
#                through $H2SPEC) and checks its failures against the
#                expected list in proxy/h2spec_test.go
#   test-fuzz    a short -fuzz run of each fuzz target of the relay's
#                parsers of untrusted bytes (seed corpora in
#                proxy/testdata/fuzz); FUZZTIME per target
H2SPEC_VERSION ?= v2.2.1+incompatible
FUZZTIME ?= 5s
RELAY_FUZZ_TARGETS := FuzzScanRequest FuzzMsgAssembler FuzzHeaderReader FuzzCheckRequest

.PHONY: h2spec-deps test-fuzz

h2spec-deps: $(BIN)/h2spec

$(BIN)/h2spec:
	GOBIN=$(BIN) $(GO) install github.com/summerwind/h2spec/cmd/h2spec@$(H2SPEC_VERSION)

test-fuzz:
	@for f in $(RELAY_FUZZ_TARGETS); do \
		echo "fuzz $$f for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) ./proxy || exit 1; \
	done
