# `make test` installs what the tests need, then runs them all.
GO ?= go
GOTEST_FLAGS ?= -race -count=1 -timeout 12m

.PHONY: test test-go vet build

build:
	$(GO) build ./...

vet:
	$(GO) vet ./...

test: vet test-go

test-go:
	$(GO) test $(GOTEST_FLAGS) ./...
