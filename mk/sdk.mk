# SDK drop-in suites and the Milvus Lite comparison.
# Included from the Makefile: `make test-sdk` installs what the suites need
# (Python venv from requirements.txt, npm ci, Maven resolves on first run)
# and runs test/sdk/run.sh: every suite against Milvus Lite directly, through
# `milvus-ha-proxy demo`, and the proxy-vs-leader comparison on two Milvus
# Lite servers. Needs python3 (3.11), node/npm (20), java 17 + mvn, go.

SDK_VENV ?= .venv
SDK_PYTHON ?= python3
SDK_TARGETS ?= all

.PHONY: test-sdk sdk-deps

test-sdk: sdk-deps
	PYTHON=$(abspath $(SDK_VENV))/bin/python bash test/sdk/run.sh $(SDK_TARGETS)

sdk-deps: $(SDK_VENV)/.sdk-installed test/sdk/node/node_modules/.sdk-installed

$(SDK_VENV)/.sdk-installed: requirements.txt
	$(SDK_PYTHON) -m venv $(SDK_VENV)
	$(SDK_VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

test/sdk/node/node_modules/.sdk-installed: test/sdk/node/package-lock.json test/sdk/node/package.json
	cd test/sdk/node && npm ci --no-audit --no-fund
	touch $@
