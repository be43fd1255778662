# `make test` checks the prerequisites (mk/prereq.mk), installs what the
# tests need, then runs them all: vet + staticcheck, the Go tests with
# -race, the SDK drop-in suites (pymilvus, Go, Node, Java; Milvus Lite
# comparison) from mk/sdk.mk, and a real Milvus 2.3.5 behind the proxy
# from mk/milvus.mk.
GO ?= go
GOTEST_FLAGS ?= -race -count=1 -timeout 12m
STATICCHECK_VERSION ?= v0.8.2
BIN := $(CURDIR)/.bin

.PHONY: test test-go vet lint fmt-check build demo

build:
	$(GO) build ./...

vet:
	$(GO) vet ./...

$(BIN)/staticcheck:
	GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# gofmt: every tracked Go file formatted (gofmt -l lists the ones that
# are not).
fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.venv/*')); \
	if [ -n "$$out" ]; then echo "gofmt: not formatted (run gofmt -w):"; echo "$$out"; exit 1; fi

lint: vet fmt-check $(BIN)/staticcheck
	$(BIN)/staticcheck ./...

# prereq first: it names a missing tool before anything is installed;
# sdk-deps and ui-deps before test-go, whose quickstart tests use the venv
# and Chromium.
test: prereq lint sdk-deps ui-deps h2spec-deps test-go test-fuzz test-sdk test-milvus

# PYTHON: the venv of sdk-deps, which test/quickstart runs README's
# Python example with.
test-go:
	PYTHON=$(abspath $(SDK_VENV))/bin/python H2SPEC=$(BIN)/h2spec $(GO) test $(GOTEST_FLAGS) ./...

demo:
	$(GO) run ./cmd/milvus-ha-proxy demo

include mk/sdk.mk
include mk/prereq.mk
include mk/chaos.mk
include mk/abuse.mk
include mk/milvus.mk
include mk/multiproxy.mk
include mk/perf.mk
include mk/h2spec.mk
