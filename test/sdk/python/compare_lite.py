#!/usr/bin/env python3
"""Milvus Lite behind milvus-ha-proxy: the proxy must be invisible.

Starts two Milvus Lite servers, `a` (leader) and `b` (alternative), and
`milvus-ha-proxy serve` with static discovery in front of them. Runs the
pymilvus scenario (scenario.py) twice with the same names -- directly against
the leader, then through the proxy -- and compares what each step observed:
same ids, same scores, same errors for the same bad calls.

Milvus Lite has no replication: the writes the proxy sends to the leader
never reach `b`, and `b` has no GetReplicateInfo, so the proxy cannot know
its lag. By the design's rules an alternative of unknown lag serves only
Eventually reads. Two choices make that testable:

  * `read.leader_serves_reads: false`, so Eventually reads go to `b` every
    time (not only when p2c picks it), and everything else goes to the leader
    because no alternative qualifies;
  * during the proxy run every write and DDL is also applied directly to `b`
    (Scenario.mirror), standing in for replication. `b` then holds the same
    data, so Eventually reads served by `b` must match the leader's answers
    too, and nothing is excluded from the comparison.

Then a routing probe sends raw Query calls through the proxy at each level
and reads the `x-milvus-ha-cluster` response header: Strong, Bounded,
Session and Customized must be served by `a`, Eventually by `b`; and the
admin topology (/api/v1/topology) must list both clusters and say why `b`
serves only Eventually reads.

With --backend milvus, `a` and `b` are real Milvus 2.3.5 standalone servers
(PyPI `milvus`, started by test/milvus/launch.py on ports chosen at run time
and stopped with SIGKILL) instead of Milvus Lite. Milvus 2.3 has no
GetReplicateInfo either, so the same rules hold; the scenario skips the steps
2.3 cannot serve (use_database: pymilvus calls DescribeDatabase; hybrid_search).

Usage: compare_lite.py [--proxy-bin PATH] [--backend lite|milvus]
Prints PASS/FAIL per check and a closing `N passed, N failed`.
"""

from __future__ import annotations

import argparse
import io
import logging
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
from pymilvus import MilvusClient  # noqa: E402
from pymilvus.grpc_gen import common_pb2, milvus_pb2, milvus_pb2_grpc  # noqa: E402

from scenario import Scenario, row  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
LAUNCH = os.path.join(ROOT, "test", "milvus", "launch.py")
# Steps of scenario.py that Milvus 2.3 cannot serve (see test/sdk/run.sh).
MILVUS23_SKIP = ["use_database", "hybrid_search"]
HEADER = "x-milvus-ha-cluster"


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port: int, secs: float, proc: Optional[subprocess.Popen] = None) -> bool:
    deadline = time.time() + secs
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


class Procs:
    """Child processes this script owns; all stopped on exit."""

    def __init__(self) -> None:
        self.procs: List[Tuple[str, subprocess.Popen, str]] = []
        self.kill_only: set = set()

    def start(self, name: str, argv: List[str], log_path: str, kill: bool = False, **kw) -> subprocess.Popen:
        """kill: stop it with SIGKILL at once (a real Milvus panics or hangs
        on SIGTERM after work)."""
        log = open(log_path, "w")  # noqa: SIM115 -- closed with the process
        # Own process group, so `go run` and its child stop together.
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True, **kw)
        self.procs.append((name, p, log_path))
        if kill:
            self.kill_only.add(p.pid)
        return p

    def stop(self) -> None:
        for _, p, _ in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL if p.pid in self.kill_only else signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for _, p, _ in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()

    def tail(self, name: str, n: int = 30) -> str:
        for nm, _, path in self.procs:
            if nm == name:
                with open(path, errors="replace") as f:
                    return "".join(f.readlines()[-n:])
        return ""


def normalize(v: Any) -> Any:
    """JSON round trip, so both sides compare as plain data."""
    return json.loads(json.dumps(v, sort_keys=True, default=str))


def diff(a: Any, b: Any, path: str = "") -> List[str]:
    if type(a) is not type(b):
        return [f"{path}: {a!r} != {b!r}"]
    if isinstance(a, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}.{k}: only on {'direct' if k in a else 'proxy'} side")
            else:
                out += diff(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)} items"]
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += diff(x, y, f"{path}[{i}]")
        return out
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def ok(self, name: str, cond: bool, detail: str = "") -> bool:
        if cond:
            self.passed += 1
            print(f"PASS {name}" + (f" ({detail})" if detail else ""), flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}: {detail}", flush=True)
        return cond


def run_scenario(label: str, uri: str, run_id: str, mirror_uri: Optional[str],
                 skip: Optional[List[str]] = None) -> Scenario:
    out = io.StringIO()
    sc = Scenario(uri, run_id=run_id, mirror_uri=mirror_uri, skip=skip, out=out)
    t0 = time.monotonic()
    sc.run()
    for line in out.getvalue().splitlines():
        print(f"    [{label}] {line}")
    print(f"# {label}: {sc.summary()} in {time.monotonic() - t0:.1f}s", flush=True)
    return sc


def routing_probe(checks: Checks, proxy_uri: str, leader_uri: str, alt_uri: str) -> None:
    """Which cluster serves each consistency level, from the response header."""
    db = f"route_{uuid.uuid4().hex[:8]}"
    admins = [MilvusClient(uri=u, timeout=30) for u in (proxy_uri, alt_uri)]
    clients: List[MilvusClient] = []
    try:
        # proxy → leader, plus the stand-in replication to b. A client made
        # for the database, not use_database: that calls DescribeDatabase,
        # which Milvus 2.3 lacks.
        for a, u in zip(admins, (proxy_uri, alt_uri)):
            a.create_database(db)
            clients.append(MilvusClient(uri=u, db_name=db, timeout=30))
        for c in clients:
            c.create_collection("r", dimension=8, primary_field_name="id", vector_field_name="vec",
                                consistency_level="Bounded", auto_id=False)
            c.insert("r", [{"id": i, "vec": row(i)["vec"]} for i in range(10)])
        channel = grpc.insecure_channel(proxy_uri.replace("http://", ""))
        stub = milvus_pb2_grpc.MilvusServiceStub(channel)
        md = [("dbname", db)]
        levels = {
            "Strong": (common_pb2.ConsistencyLevel.Strong, 0, "a"),
            "Bounded": (common_pb2.ConsistencyLevel.Bounded, 2, "a"),
            "Session": (common_pb2.ConsistencyLevel.Session, 1, "a"),
            "Customized": (common_pb2.ConsistencyLevel.Customized,
                           int(time.time() * 1000) << 18, "a"),
            "Eventually": (common_pb2.ConsistencyLevel.Eventually, 1, "b"),
        }
        for name, (level, gt, want) in levels.items():
            served = []
            counts = set()
            for _ in range(5):
                req = milvus_pb2.QueryRequest(
                    db_name=db, collection_name="r", expr="id >= 0", output_fields=["count(*)"],
                    consistency_level=level, guarantee_timestamp=gt, use_default_consistency=False)
                resp, call = stub.Query.with_call(req, metadata=md, timeout=30)
                hdr = dict(call.initial_metadata()).get(HEADER, "?")
                served.append(hdr)
                if resp.status.code == 0 and resp.fields_data:
                    counts.add(resp.fields_data[0].scalars.long_data.data[0])
                else:
                    counts.add(f"error {resp.status.code} {resp.status.reason}")
            checks.ok(f"route_{name.lower()}", set(served) == {want} and counts == {10},
                      f"served by {served}, want {want}; results {sorted(map(str, counts))}")
        # A write through the proxy goes to the leader.
        req = milvus_pb2.FlushRequest(db_name=db, collection_names=["r"])
        _, call = stub.Flush.with_call(req, metadata=md, timeout=30)
        hdr = dict(call.initial_metadata()).get(HEADER, "?")
        checks.ok("route_write", hdr == "a", f"Flush served by {hdr}")
        channel.close()
    finally:
        for c in clients:
            try:
                for coll in c.list_collections():
                    c.drop_collection(coll)
            except Exception as e:  # noqa: BLE001
                print(f"# cleanup of {db}: {e}")
            c.close()
        for a in admins:
            try:
                if db in a.list_databases():
                    a.drop_database(db)
            except Exception as e:  # noqa: BLE001
                print(f"# cleanup of {db}: {e}")
            a.close()


def check_status(checks: Checks, admin: str) -> None:
    try:
        with urllib.request.urlopen(f"http://{admin}/api/v1/topology", timeout=10) as r:
            body = r.read().decode()
    except Exception as e:  # noqa: BLE001
        checks.ok("status_topology", False, f"GET /api/v1/topology: {e}")
        return
    for line in body.splitlines()[:60]:
        print(f"STATUS {line}")
    try:
        topo = json.loads(body)
    except ValueError as e:
        checks.ok("status_topology", False, f"not JSON: {e}")
        return
    text = json.dumps(topo)
    checks.ok("status_topology", '"a"' in text and '"b"' in text, "both clusters listed")
    # The issue: alternatives with unknown lag serve only Eventually reads,
    # "and the status says why". Find b's entry and look for the reason.
    entries = []

    def walk(v):
        if isinstance(v, dict):
            if v.get("id") == "b" or v.get("cluster") == "b" or v.get("cluster_id") == "b":
                entries.append(v)
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    walk(topo)
    # Either a reason next to lag_known=false, or the word "unknown".
    explained = any(e.get("lag_known") is False and e.get("lag_reason") for e in entries)
    explained = explained or "unknown" in json.dumps(entries).lower()
    checks.ok("status_explains_alternative", bool(entries) and explained,
              f"b's entry: {json.dumps(entries)[:400]}")


def start_milvus(procs: Procs, work: str, cid: str) -> Optional[int]:
    """Starts a real Milvus standalone server with launch.py; returns its
    gRPC port once /healthz answers OK, or None (after printing why)."""
    info = os.path.join(work, f"{cid}.json")
    p = procs.start(cid, [sys.executable, LAUNCH, "--dir", os.path.join(work, cid), "--info", info],
                    os.path.join(work, f"{cid}.log"), kill=True)
    deadline = time.time() + 180  # the first start unpacks the binaries
    while time.time() < deadline and p.poll() is None:
        try:
            with open(info) as f:
                inf = json.load(f)
            with urllib.request.urlopen(f"http://127.0.0.1:{inf['metrics_port']}/healthz", timeout=2) as r:
                if b"OK" in r.read():
                    return int(inf["port"])
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    print(f"FAIL start_{cid}: Milvus did not become healthy\n{procs.tail(cid)}")
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--proxy-bin", help="milvus-ha-proxy binary (default: go run ./cmd/milvus-ha-proxy)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--fake-proxy", action="store_true",
                    help="use fake_proxy.py instead of milvus-ha-proxy (tests this script itself)")
    ap.add_argument("--backend", choices=("lite", "milvus"), default="lite",
                    help="what a and b are: Milvus Lite, or real Milvus 2.3.5 standalone servers")
    ap.add_argument("--no-mirror", action="store_true",
                    help="do not copy writes to b: Eventually reads must then differ (shows the check can fail)")
    args = ap.parse_args()
    if not os.environ.get("SDK_TRACE"):
        # pymilvus logs every failed call; the errors step makes some on purpose.
        logging.getLogger("pymilvus").setLevel(logging.CRITICAL)

    work = tempfile.mkdtemp(prefix="milvus-compare.")
    procs = Procs()
    checks = Checks()
    t0 = time.monotonic()
    try:
        if args.backend == "milvus":
            ports = {cid: start_milvus(procs, work, cid) for cid in ("a", "b")}
            if None in ports.values():
                print("0 passed, 1 failed")
                return 1
        else:
            ports = {"a": free_port(), "b": free_port()}
            for cid, port in ports.items():
                p = procs.start(cid, [sys.executable, "-m", "milvus_lite", "server", "--data-dir",
                                      os.path.join(work, cid), "--host", "127.0.0.1", "--port", str(port)],
                                os.path.join(work, f"{cid}.log"))
                if not wait_port(port, 60, p):
                    print(f"FAIL start_{cid}: milvus-lite did not start\n{procs.tail(cid)}")
                    print("0 passed, 1 failed")
                    return 1
        listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        cfg = os.path.join(work, "proxy.yaml")
        with open(cfg, "w") as f:
            f.write(f"""# written by test/sdk/python/compare_lite.py
listen: {listen}
admin_listen: {admin}
discovery: static
clusters:
  - id: a
    uri: 127.0.0.1:{ports['a']}
    role: leader
  - id: b
    uri: 127.0.0.1:{ports['b']}
    role: alternative
read:
  # b's lag is unknown (Milvus Lite and 2.3 have no GetReplicateInfo), so b may serve
  # only Eventually reads; with the leader out of the read pool, every
  # Eventually read goes to b and the routing is deterministic.
  leader_serves_reads: false
failover:
  mode: manual   # neither Lite nor 2.3 can be promoted (no UpdateReplicateConfiguration)
log:
  level: info
""")
        argv = ([args.proxy_bin] if args.proxy_bin else ["go", "run", "./cmd/milvus-ha-proxy"]) + [
            "serve", "--config", cfg, "--listen", listen, "--admin-listen", admin]
        if args.fake_proxy:
            argv = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_proxy.py"),
                    "--listen", listen, "--leader", f"127.0.0.1:{ports['a']}",
                    "--alternative", f"127.0.0.1:{ports['b']}"]
        p = procs.start("proxy", argv, os.path.join(work, "proxy.log"), cwd=ROOT)
        port = int(listen.rsplit(":", 1)[1])
        # `go run` compiles first: allow for it.
        if not wait_port(port, 300, p):
            print(f"FAIL start_proxy: {' '.join(argv)} did not listen on {listen}\n{procs.tail('proxy')}")
            print("0 passed, 1 failed")
            return 1
        checks.ok("start", True, f"leader a :{ports['a']}, alternative b :{ports['b']}, proxy {listen}")

        run_id = uuid.uuid4().hex[:8]
        leader_uri = f"http://127.0.0.1:{ports['a']}"
        alt_uri = f"http://127.0.0.1:{ports['b']}"
        proxy_uri = f"http://{listen}"
        skip = MILVUS23_SKIP if args.backend == "milvus" else None
        direct = run_scenario("direct", leader_uri, run_id, None, skip)
        through = run_scenario("proxy", proxy_uri, run_id, None if args.no_mirror else alt_uri, skip)

        checks.ok("scenario_direct", direct.failed() == 0, direct.summary())
        checks.ok("scenario_proxy", through.failed() == 0, through.summary())
        d_obs, p_obs = normalize(direct.observed), normalize(through.observed)
        for step in Scenario.STEPS:
            if step not in d_obs and step not in p_obs:
                continue
            dd = diff(d_obs.get(step), p_obs.get(step))
            checks.ok(f"same_{step}", not dd, "; ".join(dd[:5]))

        routing_probe(checks, proxy_uri, leader_uri, alt_uri)
        if not args.fake_proxy:  # the stand-in has no admin API
            check_status(checks, admin)
    except Exception as e:  # noqa: BLE001
        checks.ok("compare", False, f"{type(e).__name__}: {e}")
        print(procs.tail("proxy"))
    finally:
        procs.stop()
        if args.keep:
            print(f"# kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"# {time.monotonic() - t0:.1f}s")
    print(f"{checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
