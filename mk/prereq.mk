# Prerequisites of `make test`, checked before anything is installed, so a
# missing tool is named instead of failing half way through an install.
# Included from the Makefile; `make prereq` runs the checks alone.
#
# Python comes first: requirements.txt pins wheels for Python >= 3.11 and
# under 3.10 pip stops with "No matching distribution found", which names
# a package, not the Python version that is the real cause.
#
# Chromium (Debian's `chromium`) is optional: the status page test runs in
# it when present and is skipped otherwise; `make ui-deps` installs it with
# apt-get when run as root.

PREREQ_PYTHON_MIN ?= 3.11
PREREQ_JAVA_MIN ?= 17
PREREQ_NODE_MIN ?= 18
# Free space the caches need (pip wheels ~1.2 GB, Maven ~0.3 GB, npm, Go
# build cache): about 2.7 GB on a cold machine.
PREREQ_DISK_GB ?= 3
CHROMIUM ?= chromium

.PHONY: prereq prereq-python prereq-tools prereq-disk ui-deps

prereq: prereq-python prereq-tools prereq-disk

prereq-python:
	@py='$(SDK_PYTHON)'; min='$(PREREQ_PYTHON_MIN)'; \
	command -v "$$py" >/dev/null 2>&1 || { \
	  echo "prereq: $$py not found: make test needs Python >= $$min with venv (or set SDK_PYTHON=python3.11)" >&2; exit 1; }; \
	v=$$("$$py" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null) || { \
	  echo "prereq: $$py does not run: make test needs Python >= $$min" >&2; exit 1; }; \
	if [ "$$(printf '%s\n%s\n' "$$min" "$$v" | sort -V | head -n1)" != "$$min" ]; then \
	  echo "prereq: Python $$v found at $$(command -v $$py), make test needs Python >= $$min." >&2; \
	  echo "prereq: requirements.txt pins packages for $$min+; under older Pythons pip fails with" >&2; \
	  echo "prereq: 'No matching distribution found' without naming the version." >&2; \
	  echo "prereq: install Python $$min (with its venv module) and run: make test SDK_PYTHON=python$$min" >&2; \
	  exit 1; \
	fi; \
	"$$py" -c 'import venv, ensurepip' >/dev/null 2>&1 || { \
	  echo "prereq: Python $$v at $$(command -v $$py) has no venv/ensurepip (Debian/Ubuntu: apt-get install python3-venv)" >&2; exit 1; }; \
	echo "prereq: Python $$v ok"

prereq-tools:
	@fail=0; \
	need() { command -v "$$1" >/dev/null 2>&1 || { echo "prereq: $$1 not found: $$2" >&2; fail=1; }; }; \
	need $(GO) "the Go toolchain of go.mod"; \
	need node "Node.js >= $(PREREQ_NODE_MIN) runs the Node SDK suite"; \
	need npm "npm installs the Node SDK (npm ci)"; \
	need java "Java $(PREREQ_JAVA_MIN) runs the Java SDK suite"; \
	need mvn "Maven builds the Java SDK suite"; \
	if command -v node >/dev/null 2>&1; then \
	  nv=$$(node -p 'process.versions.node.split(".")[0]'); \
	  [ "$$nv" -ge $(PREREQ_NODE_MIN) ] || { echo "prereq: Node $$nv found, need >= $(PREREQ_NODE_MIN)" >&2; fail=1; }; \
	fi; \
	if command -v java >/dev/null 2>&1; then \
	  jv=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1); \
	  [ -n "$$jv" ] && [ "$$jv" -ge $(PREREQ_JAVA_MIN) ] || { echo "prereq: Java '$$jv' found, need >= $(PREREQ_JAVA_MIN) (the Java SDK v2 targets 17)" >&2; fail=1; }; \
	fi; \
	[ $$fail = 0 ] && echo "prereq: go, node, npm, java, mvn ok"; exit $$fail

prereq-disk:
	@avail=$$(df -Pk "$${HOME:-.}" | awk 'NR==2 {print int($$4 / 1048576)}'); \
	if [ "$$avail" -lt $(PREREQ_DISK_GB) ]; then \
	  echo "prereq: warning: $$avail GB free under $${HOME:-.}; a cold make test fills about 2.7 GB of caches (pip, Maven, npm, Go)" >&2; \
	else echo "prereq: $$avail GB free ok"; fi

ui-deps:
	@if command -v $(CHROMIUM) >/dev/null 2>&1; then \
	  echo "prereq: $(CHROMIUM) found: the status page test runs in it"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "prereq: installing chromium for the status page test (apt-get)"; \
	  apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } \
	    || echo "prereq: warning: apt-get could not install chromium; the status page test will be skipped" >&2; \
	else \
	  echo "prereq: warning: no $(CHROMIUM) (and not root with apt-get to install it): the status page test will be skipped" >&2; \
	fi
