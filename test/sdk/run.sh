#!/usr/bin/env bash
# Runs the drop-in SDK suites (pymilvus, Go, Node, Java) and the Milvus Lite
# comparison. Used by `make test-sdk` (mk/sdk.mk), which installs the
# dependencies first; run it from anywhere.
#
#   test/sdk/run.sh [all|lite|selftest|sim|demo|liteproxy|compare|uri|milvus]...
#
#   lite     every suite directly against a fresh Milvus Lite server
#            (validates the suites against a server we did not write)
#   sim      every suite directly against one `milvus-ha-proxy sim` cluster
#   demo     every suite through `milvus-ha-proxy demo` (simulated clusters)
#   liteproxy every suite through `milvus-ha-proxy serve` in front of one
#            Milvus Lite leader
#   compare  test/sdk/python/compare_lite.py: two Milvus Lite servers behind
#            `milvus-ha-proxy serve` (static discovery), pymilvus through the
#            proxy vs directly against the leader
#   selftest compare_lite.py against fake_proxy.py (tests the comparison)
#   uri      every suite against $MILVUS_URI (an already running endpoint;
#            SDK_BACKEND=lite when it is Milvus Lite or the proxy before one)
#   milvus   every suite directly against a real Milvus 2.3.5 standalone
#            server (PyPI `milvus`, started by test/milvus/launch.py), then
#            through `milvus-ha-proxy serve` in front of it, then
#            compare_lite.py --backend milvus (two real servers); steps
#            Milvus 2.3.5 cannot serve are skipped with the reason
#   all      lite, selftest, sim, demo, liteproxy and compare (default;
#            `make test` runs milvus separately, from mk/milvus.mk)
#
# A target whose proxy subcommand does not exist yet in this build is
# reported as skipped; once it exists, every failure counts.
#
# Environment: SDK_SUITES (default "python go node java"), PYTHON (default
# .venv/bin/python), MILVUS_URI (for `uri`), PROXY_BIN (a prebuilt
# milvus-ha-proxy; default: go build ./cmd/milvus-ha-proxy).
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
SUITES="${SDK_SUITES:-python go node java}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/milvus-sdk.XXXXXX")"
PIDS=()
KILL_PGIDS=() # process groups stopped with SIGKILL (real Milvus servers)
TOTAL_PASS=0
TOTAL_FAIL=0
TOTAL_SKIP=0
ROWS=()

cleanup() {
	local p
	for p in "${KILL_PGIDS[@]:-}"; do
		[ -n "$p" ] || continue
		kill -KILL -- "-$p" 2>/dev/null
	done
	for p in "${PIDS[@]:-}"; do
		[ -n "$p" ] || continue
		kill "$p" 2>/dev/null
	done
	for p in "${PIDS[@]:-}"; do
		[ -n "$p" ] || continue
		wait "$p" 2>/dev/null
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
	"$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() { # host port seconds
	"$PYTHON" - "$1" "$2" "$3" <<'EOF'
import socket, sys, time
host, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.time() + secs
while time.time() < deadline:
    try:
        socket.create_connection((host, port), 0.5).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit(1)
EOF
}

version_of() {
	case "$1" in
	python) "$PYTHON" -c 'import pymilvus; print("pymilvus " + pymilvus.__version__)' 2>/dev/null ;;
	go) echo "client/v2 $(grep -E 'github.com/milvus-io/milvus/client/v2 ' go.mod | awk '{print $2}')" ;;
	node) echo "milvus2-sdk-node $(node -p 'require("./test/sdk/node/node_modules/@zilliz/milvus2-sdk-node/package.json").version' 2>/dev/null)" ;;
	java) echo "milvus-sdk-java $(sed -n 's:.*<milvus.sdk.version>\(.*\)</milvus.sdk.version>.*:\1:p' test/sdk/java/pom.xml)" ;;
	esac
}

# run_suite SDK TARGET URI [extra env...]: runs one suite, records its counts.
run_suite() {
	local sdk="$1" target="$2" uri="$3"
	shift 3
	local log="$WORK/$sdk-$target.log" rc t0 t1
	echo "=== $sdk via $target ($uri)"
	t0=$(date +%s.%N)
	case "$sdk" in
	python) env MILVUS_URI="$uri" "$@" "$PYTHON" test/sdk/python/scenario.py ;;
	go) env MILVUS_URI="$uri" "$@" go test -count=1 -v -run 'TestScenario$' ./test/sdk/gosdk/ ;;
	node) env MILVUS_URI="$uri" "$@" node test/sdk/node/scenario.js ;;
	java) env MILVUS_URI="$uri" "$@" mvn -B -ntp -f test/sdk/java/pom.xml test ;;
	esac >"$log" 2>&1
	rc=$?
	t1=$(date +%s.%N)
	# Per-step lines and the suite's own summary; SDK noise stays in the log.
	grep -E '^(PASS|FAIL|SKIP) |^# |^[0-9]+ passed, [0-9]+ failed|Tests run:|^--- FAIL|^ok |^FAIL' "$log" | sed 's/^/    /'
	local summary p f s
	summary="$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -1)"
	if [ -z "$summary" ]; then
		echo "    (no summary line; last lines of the log:)"
		tail -20 "$log" | sed 's/^/    | /'
		p=0 f=1 s=0
	else
		p="$(echo "$summary" | sed -E 's/^([0-9]+) passed.*/\1/')"
		f="$(echo "$summary" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')"
		s="$(echo "$summary" | sed -nE 's/.*, ([0-9]+) skipped.*/\1/p')"
		s="${s:-0}"
		if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
	fi
	TOTAL_PASS=$((TOTAL_PASS + p))
	TOTAL_FAIL=$((TOTAL_FAIL + f))
	TOTAL_SKIP=$((TOTAL_SKIP + s))
	ROWS+=("$(printf '%-9s %-28s %-11s %6s %6s %6s %7.1fs' "$sdk" "$(version_of "$sdk")" "$target" "$p" "$f" "$s" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')")")
}

fail_target() { # target reason
	echo "=== FAIL $1: $2"
	ROWS+=("$(printf '%-9s %-28s %-11s %s' "-" "-" "$1" "FAILED: $2")")
	TOTAL_FAIL=$((TOTAL_FAIL + 1))
}

skip_target() { # target reason
	echo "=== SKIP $1: $2"
	ROWS+=("$(printf '%-9s %-28s %-11s %s' "-" "-" "$1" "skipped: $2")")
}

start_lite() { # name -> sets LITE_PORT
	local name="$1"
	LITE_PORT="$(free_port)"
	"$PYTHON" -m milvus_lite server --data-dir "$WORK/$name" --host 127.0.0.1 --port "$LITE_PORT" \
		>"$WORK/$name.log" 2>&1 &
	PIDS+=($!)
	if ! wait_port 127.0.0.1 "$LITE_PORT" 60; then
		echo "milvus-lite $name did not start:"
		cat "$WORK/$name.log"
		return 1
	fi
}

build_proxy() {
	if [ -n "${PROXY_BIN:-}" ]; then # a prebuilt binary
		ln -sf "$(realpath "$PROXY_BIN")" "$WORK/milvus-ha-proxy"
		return 0
	fi
	[ -x "$WORK/milvus-ha-proxy" ] && return 0
	go build -o "$WORK/milvus-ha-proxy" ./cmd/milvus-ha-proxy >"$WORK/build.log" 2>&1 || {
		cat "$WORK/build.log"
		return 1
	}
}

# has_command NAME: whether this build's binary knows the subcommand.
has_command() {
	"$WORK/milvus-ha-proxy" "$1" --help >"$WORK/help-$1.log" 2>&1
	local rc=$?
	# an unknown subcommand is a usage error naming it; --help of a known
	# one exits 0 (or 2 from flag.ErrHelp) and prints its flags.
	if grep -qiE "unknown (sub)?command|not (yet )?implemented" "$WORK/help-$1.log"; then
		return 1
	fi
	[ "$rc" -eq 0 ] || grep -q -- "-listen" "$WORK/help-$1.log"
}

# lite_suite SDK TARGET URI: one suite against a Milvus Lite backend (direct
# or behind the proxy), with the known Milvus Lite gaps accounted for: no
# search iterator v2, and the Go and Node SDKs have no v1 to fall back to
# (pymilvus and Java do); Java createIndex waits via AllocTimestamp, which
# Lite lacks (SDK_BACKEND=lite makes it not wait).
lite_suite() {
	case "$1" in
	node | go) run_suite "$1" "$2" "$3" SDK_BACKEND=lite SDK_SKIP=search_iterator ;;
	*) run_suite "$1" "$2" "$3" SDK_BACKEND=lite ;;
	esac
}

target_lite() {
	start_lite lite || { TOTAL_FAIL=$((TOTAL_FAIL + 1)); return; }
	local uri="http://127.0.0.1:$LITE_PORT" sdk
	for sdk in $SUITES; do
		lite_suite "$sdk" lite "$uri"
	done
}

# liteproxy: every suite through `milvus-ha-proxy serve` in front of one
# Milvus Lite leader (static discovery, no alternative): the drop-in claim
# for all four SDKs against a server we did not write.
target_liteproxy() {
	build_proxy || { fail_target "$1" "go build ./cmd/milvus-ha-proxy failed"; return; }
	if ! has_command serve; then
		skip_target liteproxy "this build has no 'serve' subcommand yet"
		TOTAL_SKIP=$((TOTAL_SKIP + 1))
		return
	fi
	start_lite liteproxy-a || { TOTAL_FAIL=$((TOTAL_FAIL + 1)); return; }
	local port admin sdk
	port="$(free_port)"
	admin="$(free_port)"
	printf '%s\n' "listen: 127.0.0.1:$port" "admin_listen: 127.0.0.1:$admin" "discovery: static" \
		"clusters:" "  - id: a" "    uri: 127.0.0.1:$LITE_PORT" "    role: leader" \
		"failover:" "  mode: manual" >"$WORK/liteproxy.yaml"
	"$WORK/milvus-ha-proxy" serve --config "$WORK/liteproxy.yaml" --listen "127.0.0.1:$port" \
		--admin-listen "127.0.0.1:$admin" >"$WORK/liteproxy.log" 2>&1 &
	PIDS+=($!)
	if ! wait_port 127.0.0.1 "$port" 60; then
		echo "serve did not start:"
		cat "$WORK/liteproxy.log"
		TOTAL_FAIL=$((TOTAL_FAIL + 1))
		return
	fi
	for sdk in $SUITES; do
		lite_suite "$sdk" liteproxy "http://127.0.0.1:$port"
	done
}

# sim_suite SDK TARGET URI: one suite against the simulator (directly or
# behind the proxy). Features the simulator does not have (yet) are skipped
# by name: search iterator v2 for the Go and Node SDKs, which have no v1 to
# fall back to (SDK_DEMO_SKIP_V2, default search_iterator); SDK_DEMO_SKIP
# adds steps to skip for every SDK (default none).
sim_suite() {
	local skip="${SDK_DEMO_SKIP-}" skip_v2="${SDK_DEMO_SKIP_V2-search_iterator}"
	case "$1" in
	go | node) run_suite "$1" "$2" "$3" SDK_BACKEND=sim SDK_SKIP="$skip,$skip_v2" ;;
	*) run_suite "$1" "$2" "$3" SDK_BACKEND=sim SDK_SKIP="$skip" ;;
	esac
}

# sim: every suite directly against one `milvus-ha-proxy sim` cluster, so a
# failure through the proxy can be told apart from a simulator gap.
target_sim() {
	build_proxy || { fail_target "$1" "go build ./cmd/milvus-ha-proxy failed"; return; }
	if ! has_command sim; then
		skip_target sim "this build has no 'sim' subcommand yet"
		TOTAL_SKIP=$((TOTAL_SKIP + 1))
		return
	fi
	local port sdk
	port="$(free_port)"
	"$WORK/milvus-ha-proxy" sim --cluster-id a --listen "127.0.0.1:$port" >"$WORK/sim.log" 2>&1 &
	PIDS+=($!)
	if ! wait_port 127.0.0.1 "$port" 60; then
		echo "sim did not start:"
		cat "$WORK/sim.log"
		TOTAL_FAIL=$((TOTAL_FAIL + 1))
		return
	fi
	echo "=== sim: skipping ${SDK_DEMO_SKIP:-nothing} (all SDKs), ${SDK_DEMO_SKIP_V2-search_iterator} (go, node)"
	for sdk in $SUITES; do
		sim_suite "$sdk" sim "http://127.0.0.1:$port"
	done
}

target_demo() {
	build_proxy || { fail_target "$1" "go build ./cmd/milvus-ha-proxy failed"; return; }
	if ! has_command demo; then
		skip_target demo "this build has no 'demo' subcommand yet"
		TOTAL_SKIP=$((TOTAL_SKIP + 1))
		return
	fi
	local port admin sdk
	port="$(free_port)"
	admin="$(free_port)"
	echo "=== demo: skipping ${SDK_DEMO_SKIP:-nothing} (all SDKs), ${SDK_DEMO_SKIP_V2-search_iterator} (go, node)"
	"$WORK/milvus-ha-proxy" demo --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
		>"$WORK/demo.log" 2>&1 &
	PIDS+=($!)
	if ! wait_port 127.0.0.1 "$port" 60; then
		echo "demo did not start:"
		cat "$WORK/demo.log"
		TOTAL_FAIL=$((TOTAL_FAIL + 1))
		return
	fi
	for sdk in $SUITES; do
		sim_suite "$sdk" demo "http://127.0.0.1:$port"
	done
	# The suites passing is half of it: reads must also have been spread to
	# the alternatives (Bounded, Eventually and Session reads qualify).
	local served
	served="$("$PYTHON" - "$admin" <<'EOF'
import json, sys, urllib.request
topo = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/v1/topology", timeout=10))
print(" ".join(f"{c['id']}({c['role']})={c.get('served', '?')}" for c in topo.get("clusters", [])))
EOF
)"
	echo "=== demo: requests served per cluster: ${served:-unknown}"
	if echo "$served" | grep -qE '\(alternative\)=[1-9]'; then
		echo "    PASS demo_alternatives_served"
		TOTAL_PASS=$((TOTAL_PASS + 1))
	else
		echo "    FAIL demo_alternatives_served: no alternative served a request"
		TOTAL_FAIL=$((TOTAL_FAIL + 1))
	fi
}

target_compare() {
	build_proxy || { fail_target "$1" "go build ./cmd/milvus-ha-proxy failed"; return; }
	if ! has_command serve; then
		skip_target compare "this build has no 'serve' subcommand yet"
		TOTAL_SKIP=$((TOTAL_SKIP + 1))
		return
	fi
	run_compare compare --proxy-bin "$WORK/milvus-ha-proxy"
}

# selftest: the comparison against fake_proxy.py (a byte-for-byte forwarder
# that sends Eventually reads to b), so the comparison's own logic is tested
# without the proxy.
target_selftest() {
	run_compare selftest --fake-proxy
}

run_compare() { # label args...
	local label="$1"
	shift
	local log="$WORK/$label.log" rc t0 t1 summary p f servers="lite×2"
	case " $* " in *" --backend milvus "*) servers="milvus×2" ;; esac
	echo "=== $servers comparison ($label: proxy vs leader)"
	t0=$(date +%s.%N)
	"$PYTHON" test/sdk/python/compare_lite.py "$@" >"$log" 2>&1
	rc=$?
	t1=$(date +%s.%N)
	grep -vE '^\s*$' "$log" | grep -E '^(PASS|FAIL|SKIP|DIFF|SAME|ROUTE|STATUS|#)|passed, [0-9]+ failed' | sed 's/^/    /'
	summary="$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -1)"
	if [ -z "$summary" ]; then
		tail -30 "$log" | sed 's/^/    | /'
		p=0 f=1
	else
		p="$(echo "$summary" | sed -E 's/^([0-9]+) passed.*/\1/')"
		f="$(echo "$summary" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')"
		if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
	fi
	TOTAL_PASS=$((TOTAL_PASS + p))
	TOTAL_FAIL=$((TOTAL_FAIL + f))
	ROWS+=("$(printf '%-9s %-28s %-11s %6s %6s %6s %7.1fs' "$label" "$(version_of python)" "$servers" "$p" "$f" 0 "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')")")
}

# start_milvus NAME -> sets MILVUS_PORT: a real Milvus 2.3.5 standalone
# server on ports chosen at run time (test/milvus/launch.py), in its own
# process group (setsid), stopped by cleanup with SIGKILL: after work it
# panics or hangs on SIGTERM. launch.py also has the kernel kill it if this
# script dies first.
start_milvus() {
	local name="$1" dir="$WORK/$1" info pid metrics t0
	mkdir -p "$dir"
	t0=$(date +%s.%N)
	setsid "$PYTHON" test/milvus/launch.py --dir "$dir" >"$WORK/$name.log" 2>&1 &
	pid=$!
	KILL_PGIDS+=("$pid")
	PIDS+=("$pid")
	info="$dir/info.json"
	for _ in $(seq 1 600); do
		[ -s "$info" ] && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if [ ! -s "$info" ]; then
		echo "launch.py $name wrote no $info:"
		tail -20 "$WORK/$name.log"
		return 1
	fi
	MILVUS_PORT="$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' "$info")"
	metrics="$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["metrics_port"])' "$info")"
	# Healthy = /healthz on the metrics port answers OK.
	if ! "$PYTHON" -c '
import sys, time, urllib.request
deadline = time.time() + 120
while time.time() < deadline:
    try:
        if b"OK" in urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/healthz", timeout=2).read():
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(1)
' "$metrics"; then
		echo "Milvus $name did not become healthy; last log lines:"
		tail -20 "$WORK/$name.log"
		return 1
	fi
	echo "=== Milvus $("$PYTHON" -c 'import milvus; print(milvus.__version__)') standalone ($name) healthy on 127.0.0.1:$MILVUS_PORT after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s"
}

# milvus23_suite SDK TARGET URI: one suite against Milvus 2.3.5, directly
# (TARGET milvus) or through the proxy (milvusproxy). Skipped, and why:
#   hybrid_search       Milvus 2.3 has no HybridSearch RPC (added in 2.4)
#   search_iterator     go, node: they need search iterator v2 (Milvus 2.5)
#                       and have no v1 to fall back to (pymilvus, Java do)
#   use_database        python: pymilvus's use_database calls
#                       DescribeDatabase, which Milvus 2.3 lacks (the
#                       suite then runs in the default database)
#   aliases             go, node, java: Milvus 2.3.5's ListAliases ignores
#                       the request's database, and these suites work in a
#                       database of their own
# Directly only (through the proxy it must pass, it is the point):
#   session_read_your_writes  go, node: Session reads carry guarantee
#                       timestamp 0, which Milvus takes as "no wait", so
#                       the client misses its own fresh writes; with
#                       SDK_SESSION_GT0_STALE the step still writes its row
#                       and reports a miss as skipped
# SDK_BACKEND=milvus23 leaves the DescribeDatabase check out of Node's
# errors step.
milvus23_suite() {
	local sdk="$1" target="$2" skip="hybrid_search" stale=""
	case "$sdk" in
	python) skip="$skip,use_database" ;;
	java) skip="$skip,aliases" ;;
	go | node) skip="$skip,search_iterator,aliases" ;;
	esac
	if [ "$target" = milvus ]; then
		case "$sdk" in
		go) stale=1 ;;
		node) stale=1 ;;
		esac
	fi
	run_suite "$sdk" "$target" "$3" SDK_BACKEND=milvus23 SDK_SKIP="$skip" SDK_SESSION_GT0_STALE="$stale"
}

# milvus: every suite directly against a real Milvus 2.3.5, then through
# `milvus-ha-proxy serve` (static discovery, one leader) in front of the
# same server.
target_milvus() {
	if ! "$PYTHON" -c 'import milvus' 2>/dev/null; then
		fail_target milvus "$PYTHON has no milvus package (pip install -r requirements.txt)"
		return
	fi
	start_milvus milvus || { fail_target milvus "Milvus did not start"; return; }
	local sdk port admin
	echo "=== milvus: skipped against Milvus 2.3.5 (details: milvus23_suite in test/sdk/run.sh):"
	echo "    hybrid_search (no HybridSearch RPC before 2.4); search_iterator for go, node (no iterator v2, no v1 fallback);"
	echo "    use_database for python (needs DescribeDatabase); aliases for go, node, java (2.3.5 ListAliases ignores the database);"
	echo "    directly only: session_read_your_writes for go, node when the read misses (guarantee timestamp 0)"
	for sdk in $SUITES; do
		milvus23_suite "$sdk" milvus "http://127.0.0.1:$MILVUS_PORT"
	done
	build_proxy || { fail_target milvusproxy "go build ./cmd/milvus-ha-proxy failed"; return; }
	port="$(free_port)"
	admin="$(free_port)"
	printf '%s\n' "listen: 127.0.0.1:$port" "admin_listen: 127.0.0.1:$admin" "discovery: static" \
		"clusters:" "  - id: a" "    uri: 127.0.0.1:$MILVUS_PORT" "    role: leader" \
		"failover:" "  mode: manual" >"$WORK/milvusproxy.yaml"
	"$WORK/milvus-ha-proxy" serve --config "$WORK/milvusproxy.yaml" >"$WORK/milvusproxy.log" 2>&1 &
	PIDS+=($!)
	if ! wait_port 127.0.0.1 "$port" 60; then
		echo "serve did not start:"
		cat "$WORK/milvusproxy.log"
		fail_target milvusproxy "serve did not start"
		return
	fi
	for sdk in $SUITES; do
		milvus23_suite "$sdk" milvusproxy "http://127.0.0.1:$port"
	done
	# compare_lite.py on two real Milvus servers: the pymilvus scenario
	# through the proxy vs directly, step by step, and the routing probe.
	run_compare milvuscompare --proxy-bin "$WORK/milvus-ha-proxy" --backend milvus
}

target_uri() {
	local sdk
	: "${MILVUS_URI:?set MILVUS_URI for the uri target}"
	for sdk in $SUITES; do
		if [ "${SDK_BACKEND:-}" = lite ]; then
			lite_suite "$sdk" uri "$MILVUS_URI"
		else
			run_suite "$sdk" uri "$MILVUS_URI"
		fi
	done
}

TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(all)
for t in "${TARGETS[@]}"; do
	case "$t" in
	all) target_lite; target_selftest; target_sim sim; target_demo demo; target_liteproxy liteproxy; target_compare compare ;;
	sim) target_sim sim ;;
	liteproxy) target_liteproxy liteproxy ;;
	selftest) target_selftest ;;
	lite) target_lite ;;
	demo) target_demo demo ;;
	compare) target_compare compare ;;
	uri) target_uri ;;
	milvus) target_milvus ;;
	*) echo "unknown target $t (want all|lite|selftest|sim|demo|liteproxy|compare|uri|milvus)" >&2; exit 2 ;;
	esac
done

echo
printf '%-9s %-28s %-11s %6s %6s %6s %8s\n' SDK version target passed failed skip time
for r in "${ROWS[@]:-}"; do echo "$r"; done
echo
echo "sdk: $TOTAL_PASS passed, $TOTAL_FAIL failed, $TOTAL_SKIP skipped"
[ "$TOTAL_FAIL" -eq 0 ]
