# A real Milvus behind the proxy. Included from the Makefile; `make test`
# runs test-milvus: the Go tests in test/milvus (read-your-writes for SDKs
# that send guarantee timestamp 0, and the data workload compared directly
# and through `serve`) and the four SDK suites against a real Milvus 2.3.5
# standalone server directly and through `serve` (test/sdk/run.sh milvus).
# The server comes from PyPI's `milvus` package, installed into the SDK venv
# from requirements.txt (sdk-deps, mk/sdk.mk); test/milvus/launch.py starts
# each one on loopback ports chosen at run time and nothing outlives a run.

MILVUS_GOTEST_FLAGS ?= -race -count=1 -timeout 10m

.PHONY: test-milvus test-milvus-go test-milvus-sdk

test-milvus: test-milvus-go test-milvus-sdk

test-milvus-go: sdk-deps
	MHP_MILVUS_PYTHON=$(abspath $(SDK_VENV))/bin/python MHP_MILVUS_REQUIRED=1 \
		$(GO) test $(MILVUS_GOTEST_FLAGS) -v ./test/milvus/

test-milvus-sdk: sdk-deps
	PYTHON=$(abspath $(SDK_VENV))/bin/python bash test/sdk/run.sh milvus
