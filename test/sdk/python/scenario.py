#!/usr/bin/env python3
"""The drop-in scenario for pymilvus.

Runs the same steps as the Go, Node and Java suites against MILVUS_URI (a
Milvus server, Milvus Lite, or milvus-ha-proxy in front of either) and
prints one PASS/FAIL line per step and a closing `N passed, N failed`.

Each step stores what it observed (ids, scores, errors) in
`Scenario.observed`, so compare_lite.py can run the scenario twice -- through
the proxy and directly against a backend -- and diff the two.

Steps that need features a backend may lack (iterators, hybrid search) are
separate steps, so a report says exactly which one fails where.

Environment:
  MILVUS_URI      endpoint, default http://127.0.0.1:19530
  MILVUS_TOKEN    optional token (user:password or API key)
  SDK_RUN_ID      suffix for database/collection names (default: random)
  SDK_SKIP        comma-separated step names to skip (reported as skipped)
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
import uuid
from typing import Any, Callable, Dict, List, Optional

from pymilvus import (
    AnnSearchRequest,
    DataType,
    MilvusClient,
    MilvusException,
    RRFRanker,
)

DIM = 8
ROWS = 100          # ids 0..99
SESSION_ID = 1000   # inserted by the read-your-writes step
PART_BASE = 2000    # rows inserted into the partition
PART_ROWS = 10


def vector(i: int) -> List[float]:
    """Deterministic vector for row i, computed the same way in every
    suite (integer hash, exact in every language, so there are no ties)."""
    return [
        (((i + 1) * (j + 3) * 2654435761) % 4294967296) / 4294967296.0
        for j in range(DIM)
    ]


def row(i: int) -> Dict[str, Any]:
    return {
        "id": i,
        "vec": vector(i),
        "title": f"title-{i}",
        "n": i,
        "meta": {"i": i, "even": i % 2 == 0, "tag": f"t{i % 5}"},
    }


def now_hybrid_ts() -> int:
    """A Milvus hybrid timestamp for the current wall clock."""
    return int(time.time() * 1000) << 18


class StepFailed(AssertionError):
    pass


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise StepFailed(msg)


def error_of(e: Exception) -> Dict[str, Any]:
    """What we compare about an error: its Milvus code and message."""
    if isinstance(e, MilvusException):
        return {"code": e.code, "message": e.message}
    return {"type": type(e).__name__, "message": str(e)}


class Scenario:
    def __init__(
        self,
        uri: str,
        token: str = "",
        run_id: Optional[str] = None,
        mirror_uri: Optional[str] = None,
        skip: Optional[List[str]] = None,
        out=sys.stdout,
    ) -> None:
        self.uri = uri
        self.token = token
        self.run_id = run_id or uuid.uuid4().hex[:8]
        self.db = f"sdk_py_{self.run_id}"
        self.coll = "items"
        self.alias = f"items_alias_{self.run_id}"
        self.part = "p1"
        self.mirror_uri = mirror_uri
        self.skip = set(skip or [])
        self.out = out
        self.client: Optional[MilvusClient] = None
        self.mirror: Optional[MilvusClient] = None
        self.observed: Dict[str, Any] = {}
        self.results: List[tuple] = []  # (step, status, detail, seconds)
        self.last_write_ts = 0

    # -- helpers -------------------------------------------------------------

    def write(self, method: str, *args, **kwargs):
        """A write or DDL. With a mirror (compare_lite.py), it is also
        applied directly to the mirror server, standing in for Milvus
        replication, which Milvus Lite does not have; so Eventually reads
        that the proxy sends to the alternative see the same data."""
        res = getattr(self.client, method)(*args, **kwargs)
        if self.mirror is not None:
            getattr(self.mirror, method)(*args, **kwargs)
        return res

    def note_write(self, res: Dict[str, Any]) -> None:
        """Remember the last write's timestamp. MilvusClient does not return
        it; pymilvus keeps it in its Session cache (per endpoint, database
        and collection), which is what it sends as Session's
        guarantee_timestamp. Milvus Lite's writes carry 0."""
        ts = 0
        try:
            from pymilvus.client import ts_utils
            ts = ts_utils.get_collection_ts(
                self.coll, self.client._get_connection().server_address, self.db) or 0
        except Exception:  # noqa: BLE001 -- private API; fall back to the clock
            ts = 0
        self.last_write_ts = max(self.last_write_ts, int(ts))

    def count(self, **kwargs) -> int:
        res = self.client.query(self.coll, filter="", output_fields=["count(*)"], **kwargs)
        return int(res[0]["count(*)"])

    @staticmethod
    def hits(res) -> List[List[Dict[str, Any]]]:
        """Search results as plain data: ids, rounded distances, fields."""
        out = []
        for q in res:
            out.append([
                {
                    "id": h["id"],
                    "distance": round(float(h["distance"]), 5),
                    "entity": {k: v for k, v in sorted(h.get("entity", {}).items())},
                }
                for h in q
            ])
        return out

    @staticmethod
    def rows(res) -> List[Dict[str, Any]]:
        def clean(r):
            d = {}
            for k, v in sorted(dict(r).items()):
                if k == "vec":
                    v = [round(float(x), 5) for x in v]
                d[k] = v
            return d
        return sorted((clean(r) for r in res), key=lambda r: r.get("id", 0))

    # -- steps ---------------------------------------------------------------

    def step_connect(self):
        self.client = MilvusClient(uri=self.uri, token=self.token, timeout=30)
        if self.mirror_uri:
            self.mirror = MilvusClient(uri=self.mirror_uri, token=self.token, timeout=30)
        v = self.client.get_server_version()
        check(isinstance(v, str) and v != "", f"empty server version {v!r}")
        self.observed["connect"] = "ok"

    def step_create_database(self):
        self.write("create_database", self.db)
        dbs = self.client.list_databases()
        check(self.db in dbs, f"{self.db} not in {dbs}")
        self.observed["create_database"] = self.db in dbs

    def step_use_database(self):
        self.client.use_database(self.db)
        if self.mirror is not None:
            self.mirror.use_database(self.db)
        check(self.client.list_collections() == [], "fresh database is not empty")
        self.observed["use_database"] = "ok"

    def step_create_collection(self):
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=DIM)
        schema.add_field("title", DataType.VARCHAR, max_length=64)
        schema.add_field("n", DataType.INT64)
        schema.add_field("meta", DataType.JSON)
        self.write("create_collection", self.coll, schema=schema, consistency_level="Bounded")
        d = self.client.describe_collection(self.coll)
        names = [f["name"] for f in d["fields"]]
        check(names == ["id", "vec", "title", "n", "meta"], f"fields {names}")
        check(self.client.has_collection(self.coll), "has_collection false")
        self.observed["create_collection"] = {"fields": names}

    def step_create_index(self):
        ip = MilvusClient.prepare_index_params()
        ip.add_index(field_name="vec", index_type="FLAT", metric_type="L2", index_name="vec_idx")
        self.write("create_index", self.coll, ip)
        idx = self.client.list_indexes(self.coll)
        # Milvus names the index vec_idx; Milvus Lite names it after the field.
        names = [i for i in idx if i in ("vec_idx", "vec")]
        check(len(names) == 1, f"indexes {idx}")
        desc = self.client.describe_index(self.coll, names[0])
        check(desc.get("metric_type") == "L2", f"describe_index {desc}")
        self.observed["create_index"] = {"indexes": idx, "metric": desc.get("metric_type")}

    def step_load(self):
        self.write("load_collection", self.coll)
        st = self.client.get_load_state(self.coll)
        check("Loaded" in str(st.get("state")), f"load state {st}")
        self.observed["load"] = str(st.get("state"))

    def step_insert(self):
        res = self.write("insert", self.coll, [row(i) for i in range(ROWS)])
        self.note_write(res)
        check(res["insert_count"] == ROWS, f"insert_count {res}")
        check(sorted(res["ids"]) == list(range(ROWS)), "ids differ")
        self.observed["insert"] = {"insert_count": res["insert_count"], "ids": list(res["ids"])}

    def step_session_read_your_writes(self):
        # One row, then read it back at once with Session consistency: the
        # SDK sends the insert's timestamp as guarantee_timestamp, and the
        # proxy must send this read to a cluster that has that write.
        res = self.write("insert", self.coll, [row(SESSION_ID)])
        self.note_write(res)
        got = self.client.query(
            self.coll, filter=f"id == {SESSION_ID}", output_fields=["title"],
            consistency_level="Session",
        )
        check([r["title"] for r in got] == [f"title-{SESSION_ID}"], f"session read {got}")
        s = self.client.search(
            self.coll, data=[vector(SESSION_ID)], limit=1, output_fields=["n"],
            consistency_level="Session",
        )
        check(s[0][0]["id"] == SESSION_ID, f"session search top hit {s[0][0]}")
        self.observed["session_read_your_writes"] = {"query": self.rows(got), "search": self.hits(s)}

    def step_search_filter_output(self):
        q = [vector(5), vector(42)]
        res = self.client.search(
            self.coll, data=q, limit=5, filter="n >= 5 and n < 90",
            output_fields=["title", "n", "meta"], search_params={"metric_type": "L2"},
            consistency_level="Strong",
        )
        check(len(res) == 2, f"nq {len(res)}")
        for qi, hits in enumerate(res):
            check(len(hits) == 5, f"query {qi}: {len(hits)} hits")
            ds = [h["distance"] for h in hits]
            check(ds == sorted(ds), f"query {qi}: distances not ascending {ds}")
            for h in hits:
                e = h["entity"]
                check(5 <= e["n"] < 90, f"filter violated {e}")
                check(e["title"] == f"title-{h['id']}", f"title {e}")
                check(e["meta"]["i"] == h["id"], f"meta {e}")
        check(res[0][0]["id"] == 5 and res[1][0]["id"] == 42, "nearest is not the row itself")
        check(abs(res[0][0]["distance"]) < 1e-5, f"self distance {res[0][0]['distance']}")
        self.observed["search_filter_output"] = self.hits(res)

    def step_query_filter(self):
        res = self.client.query(
            self.coll, filter='n < 10 and meta["even"] == true',
            output_fields=["id", "title", "meta"], consistency_level="Strong",
        )
        ids = sorted(r["id"] for r in res)
        check(ids == [0, 2, 4, 6, 8], f"ids {ids}")
        lim = self.client.query(self.coll, filter="n >= 0", limit=7, output_fields=["id"],
                                consistency_level="Strong")
        check(len(lim) == 7, f"limit 7 gave {len(lim)}")
        self.observed["query_filter"] = self.rows(res)

    def step_get_by_ids(self):
        res = self.client.get(self.coll, ids=[3, 7, 99], output_fields=["title", "vec"])
        check(sorted(r["id"] for r in res) == [3, 7, 99], f"get {res}")
        for r in res:
            check(all(abs(a - b) < 1e-6 for a, b in zip(r["vec"], vector(r["id"]))), "vector differs")
        self.observed["get_by_ids"] = self.rows(res)

    def step_count(self):
        c = self.count(consistency_level="Strong")
        check(c == ROWS + 1, f"count(*) {c}")
        cf = self.client.query(self.coll, filter="n < 50", output_fields=["count(*)"],
                               consistency_level="Strong")[0]["count(*)"]
        check(cf == 50, f"count(*) filtered {cf}")
        self.observed["count"] = [c, cf]

    def step_upsert(self):
        r = row(3)
        r["title"] = "upserted-3"
        new = row(ROWS + 500)
        res = self.write("upsert", self.coll, [r, new])
        self.note_write(res)
        check(res["upsert_count"] == 2, f"upsert {res}")
        got = self.client.query(self.coll, filter=f"id in [3, {ROWS + 500}]", output_fields=["title"],
                                consistency_level="Strong")
        titles = {g["id"]: g["title"] for g in got}
        check(titles == {3: "upserted-3", ROWS + 500: f"title-{ROWS + 500}"}, f"titles {titles}")
        check(self.count(consistency_level="Strong") == ROWS + 2, "count after upsert")
        self.observed["upsert"] = {"count": res["upsert_count"], "rows": self.rows(got)}

    def step_delete(self):
        res = self.write("delete", self.coll, ids=[0, 1, 2, ROWS + 500])
        self.note_write(res)
        got = self.client.query(self.coll, filter=f"id in [0, 1, 2, {ROWS + 500}]",
                                output_fields=["id"], consistency_level="Strong")
        check(got == [] or len(got) == 0, f"deleted rows still there {got}")
        res2 = self.write("delete", self.coll, filter="n >= 95 and n < 98")
        self.note_write(res2)
        c = self.count(consistency_level="Strong")
        check(c == ROWS + 1 - 3 - 3, f"count after delete {c}")
        self.observed["delete"] = {"count": c}

    def step_partitions(self):
        self.write("create_partition", self.coll, self.part)
        try:
            parts = self.client.list_partitions(self.coll)
            check(self.part in parts and "_default" in parts, f"partitions {parts}")
            check(self.client.has_partition(self.coll, self.part), "has_partition false")
            # The collection is loaded, so Milvus loads the new partition too.
            res = self.write("insert", self.coll, [row(PART_BASE + i) for i in range(PART_ROWS)],
                             partition_name=self.part)
            self.note_write(res)
            # (A filter, not "": Milvus Lite's count(*) without a filter
            # ignores partition_names.)
            got = self.client.query(self.coll, filter="n >= 0", output_fields=["count(*)"],
                                    partition_names=[self.part], consistency_level="Strong")
            check(got[0]["count(*)"] == PART_ROWS, f"partition count {got[0]}")
            s = self.client.search(self.coll, data=[vector(PART_BASE + 1)], limit=3,
                                   partition_names=[self.part], consistency_level="Strong")
            check(all(PART_BASE <= h["id"] < PART_BASE + PART_ROWS for h in s[0]),
                  f"partition search {s}")
            check(s[0][0]["id"] == PART_BASE + 1, f"partition search top {s[0][0]}")
        finally:
            # A loaded partition cannot be dropped; Milvus Lite has no
            # partition-level release, so release and reload the collection.
            self.write("release_collection", self.coll)
            self.write("drop_partition", self.coll, self.part)
            self.write("load_collection", self.coll)
        check(not self.client.has_partition(self.coll, self.part), "partition not dropped")
        check(self.count(consistency_level="Strong") == ROWS + 1 - 6, "partition rows still counted")
        self.observed["partitions"] = {"parts": sorted(parts), "search": self.hits(s)}

    def step_aliases(self):
        self.write("create_alias", self.coll, self.alias)
        al = self.client.list_aliases(self.coll)
        check(self.alias in al.get("aliases", []), f"aliases {al}")
        d = self.client.describe_alias(self.alias)
        check(d.get("collection_name") == self.coll, f"describe_alias {d}")
        got = self.client.query(self.alias, filter="id == 10", output_fields=["title"],
                                consistency_level="Strong")
        check([g["title"] for g in got] == ["title-10"], f"query via alias {got}")
        s = self.client.search(self.alias, data=[vector(10)], limit=1, consistency_level="Strong")
        check(s[0][0]["id"] == 10, f"search via alias {s}")
        self.write("alter_alias", self.coll, self.alias)
        self.write("drop_alias", self.alias)
        al2 = self.client.list_aliases(self.coll)
        check(self.alias not in al2.get("aliases", []), f"alias not dropped {al2}")
        self.observed["aliases"] = {"query": self.rows(got), "search": self.hits(s)}

    def step_query_iterator(self):
        it = self.client.query_iterator(self.coll, batch_size=10, filter="n >= 0",
                                        output_fields=["id"])
        ids = []
        pages = 0
        while True:
            page = it.next()
            if not page:
                it.close()
                break
            pages += 1
            ids.extend(r["id"] for r in page)
        expected = self.count(consistency_level="Strong")
        check(len(ids) == expected and len(set(ids)) == expected, f"iterated {len(ids)} of {expected}")
        check(pages >= 9, f"only {pages} pages of 10")
        self.observed["query_iterator"] = sorted(ids)

    def step_search_iterator(self):
        it = self.client.search_iterator(self.coll, data=[vector(20)], batch_size=10, limit=30,
                                         search_params={"metric_type": "L2"})
        ids, ds = [], []
        while True:
            page = it.next()
            if not page:
                it.close()
                break
            for h in page:
                ids.append(h["id"])
                ds.append(h["distance"])
        check(len(ids) == 30 and len(set(ids)) == 30, f"iterated {len(ids)} hits")
        check(ids[0] == 20, f"first hit {ids[0]}")
        check(ds == sorted(ds), "distances not ascending")
        self.observed["search_iterator"] = ids

    def step_hybrid_search(self):
        reqs = [
            AnnSearchRequest(data=[vector(30)], anns_field="vec", param={"metric_type": "L2"},
                             limit=5, expr="n >= 10"),
            AnnSearchRequest(data=[vector(31)], anns_field="vec", param={"metric_type": "L2"},
                             limit=5, expr="n >= 10"),
        ]
        res = self.client.hybrid_search(self.coll, reqs, RRFRanker(60), limit=4,
                                        output_fields=["title"], consistency_level="Strong")
        ids = [h["id"] for h in res[0]]
        check(len(ids) == 4 and set(ids) >= {30, 31}, f"hybrid ids {ids}")
        self.observed["hybrid_search"] = self.hits(res)

    def _level(self, level: str, exact: bool, **extra):
        c = self.count(consistency_level=level, **extra)
        expected = ROWS + 1 - 6
        # Strong, Session and Customized(ts of our last write) must see every
        # write; Bounded and Eventually may lag (proxy + replication).
        if exact:
            check(c == expected, f"{level}: count {c}, want {expected}")
        else:
            check(0 <= c <= expected + 1, f"{level}: count {c}")
        s = self.client.search(self.coll, data=[vector(60)], limit=3, consistency_level=level,
                               output_fields=["n"], **extra)
        check(len(s[0]) == 3, f"{level}: {len(s[0])} hits")
        if exact:
            check(s[0][0]["id"] == 60, f"{level}: top hit {s[0][0]}")
        return {"count": c, "search": self.hits(s)}

    def step_consistency_strong(self):
        self.observed["consistency_strong"] = self._level("Strong", True)

    def step_consistency_session(self):
        self.observed["consistency_session"] = self._level("Session", True)

    def step_consistency_bounded(self):
        self.observed["consistency_bounded"] = self._level("Bounded", False)

    def step_consistency_eventually(self):
        self.observed["consistency_eventually"] = self._level("Eventually", False)

    def step_consistency_customized(self):
        # Customized with our last write's timestamp (Milvus Lite returns 0
        # for every write, then a wall-clock hybrid timestamp stands in).
        ts = self.last_write_ts or now_hybrid_ts()
        self.observed["consistency_customized"] = self._level(
            "Customized", True, guarantee_timestamp=ts)

    def step_default_consistency(self):
        # No level at all: use_default_consistency=true (collection is Bounded).
        c = self.client.query(self.coll, filter="", output_fields=["count(*)"])[0]["count(*)"]
        check(0 <= c <= ROWS + 2, f"count {c}")
        self.observed["default_consistency"] = c

    def step_errors(self):
        """Bad calls: the errors must be the same through the proxy."""
        got = {}
        calls = {
            "search_missing_collection": lambda: self.client.search(
                "no_such_collection", data=[vector(1)], limit=1),
            "query_bad_expr": lambda: self.client.query(
                self.coll, filter="n >>> 3", output_fields=["id"]),
            "insert_wrong_dim": lambda: self.client.insert(
                self.coll, [{"id": 1, "vec": [0.1] * (DIM + 1), "title": "x", "n": 1, "meta": {}}]),
            "describe_missing_database": lambda: self.client.describe_database("no_such_db_xyz"),
            "drop_default_partition": lambda: self.client.drop_partition(self.coll, "_default"),
            "describe_missing_collection": lambda: self.client.describe_collection("no_such_coll"),
        }
        for name, fn in calls.items():
            try:
                fn()
                got[name] = {"error": None}
            except Exception as e:  # noqa: BLE001 -- the error is the observation
                got[name] = error_of(e)
        missing = [n for n in ("search_missing_collection", "query_bad_expr",
                               "insert_wrong_dim", "describe_missing_database",
                               "describe_missing_collection")
                   if got[n].get("error", 1) is None]
        check(not missing, f"no error for {missing}")
        self.observed["errors"] = got

    def step_drop(self):
        self.write("release_collection", self.coll)
        self.write("drop_collection", self.coll)
        check(not self.client.has_collection(self.coll), "collection still there")
        # With use_database skipped (Milvus 2.3 has no DescribeDatabase,
        # which pymilvus's use_database calls) the client never left default.
        if "use_database" not in self.skip:
            self.client.use_database("default")
            if self.mirror is not None:
                self.mirror.use_database("default")
        self.write("drop_database", self.db)
        check(self.db not in self.client.list_databases(), "database still there")
        self.observed["drop"] = "ok"

    STEPS = [
        "connect", "create_database", "use_database", "create_collection", "create_index",
        "load", "insert", "session_read_your_writes", "search_filter_output", "query_filter",
        "get_by_ids", "count", "upsert", "delete", "partitions", "aliases",
        "query_iterator", "search_iterator", "hybrid_search",
        "consistency_strong", "consistency_session", "consistency_bounded",
        "consistency_eventually", "consistency_customized", "default_consistency",
        "errors", "drop",
    ]

    def run(self) -> int:
        for name in self.STEPS:
            if name in self.skip:
                self.results.append((name, "SKIP", "", 0.0))
                print(f"SKIP {name}", file=self.out, flush=True)
                continue
            t0 = time.monotonic()
            try:
                getattr(self, "step_" + name)()
                dt = time.monotonic() - t0
                self.results.append((name, "PASS", "", dt))
                print(f"PASS {name} ({dt:.2f}s)", file=self.out, flush=True)
            except Exception as e:  # noqa: BLE001 -- report every step
                dt = time.monotonic() - t0
                detail = f"{type(e).__name__}: {e}"
                self.results.append((name, "FAIL", detail, dt))
                self.observed.setdefault(name, {"failed": error_of(e)})
                print(f"FAIL {name} ({dt:.2f}s): {detail}", file=self.out, flush=True)
                if os.environ.get("SDK_TRACE"):
                    traceback.print_exc()
                if name == "connect":
                    break
        self.cleanup()
        return self.failed()

    def cleanup(self) -> None:
        """Best effort: leave nothing behind even when steps failed."""
        for c in (self.client, self.mirror):
            if c is None:
                continue
            try:
                c.use_database("default")
                if self.db in c.list_databases():
                    c.use_database(self.db)
                    for coll in c.list_collections():
                        for a in c.list_aliases(coll).get("aliases", []):
                            c.drop_alias(a)
                        c.drop_collection(coll)
                    c.use_database("default")
                    c.drop_database(self.db)
            except Exception:  # noqa: BLE001
                pass
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass

    def passed(self) -> int:
        return sum(1 for r in self.results if r[1] == "PASS")

    def failed(self) -> int:
        return sum(1 for r in self.results if r[1] == "FAIL")

    def summary(self) -> str:
        s = f"{self.passed()} passed, {self.failed()} failed"
        skipped = sum(1 for r in self.results if r[1] == "SKIP")
        if skipped:
            s += f", {skipped} skipped"
        return s


def main() -> int:
    if not os.environ.get("SDK_TRACE"):
        # pymilvus logs every failed call; the errors step makes some on purpose.
        logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    uri = os.environ.get("MILVUS_URI", "http://127.0.0.1:19530")
    skip = [s for s in os.environ.get("SDK_SKIP", "").split(",") if s]
    sc = Scenario(uri, token=os.environ.get("MILVUS_TOKEN", ""),
                  run_id=os.environ.get("SDK_RUN_ID") or None, skip=skip)
    print(f"# pymilvus scenario against {uri} (db {sc.db})", flush=True)
    t0 = time.monotonic()
    failed = sc.run()
    if os.environ.get("SDK_OBSERVED"):
        with open(os.environ["SDK_OBSERVED"], "w") as f:
            json.dump(sc.observed, f, indent=1, sort_keys=True, default=str)
    print(f"# {time.monotonic() - t0:.1f}s", flush=True)
    print(sc.summary(), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
