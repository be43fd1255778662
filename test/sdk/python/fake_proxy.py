#!/usr/bin/env python3
"""A stand-in for milvus-ha-proxy, for testing compare_lite.py itself.

Forwards every MilvusService call byte-for-byte to the leader, except
Search/Query/HybridSearch at consistency level Eventually, which go to the
alternative; every response carries `x-milvus-ha-cluster`. It is what
compare_lite.py expects of the real proxy in its static Milvus Lite setup,
and nothing more: `compare_lite.py --fake-proxy` runs against it so the
comparison's own logic is checked before (and independently of) the proxy.

  fake_proxy.py --listen 127.0.0.1:P --leader 127.0.0.1:A --alternative 127.0.0.1:B
"""

from __future__ import annotations

import argparse
from concurrent import futures

import grpc
from pymilvus.grpc_gen import common_pb2, milvus_pb2

HEADER = "x-milvus-ha-cluster"
READS = {
    "/milvus.proto.milvus.MilvusService/Search": milvus_pb2.SearchRequest,
    "/milvus.proto.milvus.MilvusService/Query": milvus_pb2.QueryRequest,
    "/milvus.proto.milvus.MilvusService/HybridSearch": milvus_pb2.HybridSearchRequest,
}


class Forwarder(grpc.GenericRpcHandler):
    def __init__(self, leader: str, alternative: str) -> None:
        self.channels = {"a": grpc.insecure_channel(leader), "b": grpc.insecure_channel(alternative)}

    def pick(self, method: str, raw: bytes) -> str:
        cls = READS.get(method)
        if cls is None:
            return "a"
        req = cls.FromString(raw)
        if not req.use_default_consistency and req.consistency_level == common_pb2.ConsistencyLevel.Eventually:
            return "b"
        return "a"

    def service(self, details):
        method = details.method

        def unary(raw: bytes, ctx: grpc.ServicerContext) -> bytes:
            cid = self.pick(method, raw)
            md = [(k, v) for k, v in ctx.invocation_metadata() if not k.startswith(":")]
            call = self.channels[cid].unary_unary(method)  # bytes in, bytes out
            ctx.send_initial_metadata([(HEADER, cid)])
            try:
                left = ctx.time_remaining()
                timeout = left if left is not None and 0 < left < 3600 else 60
                return call(raw, metadata=md, timeout=timeout)
            except grpc.RpcError as e:
                ctx.abort(e.code(), e.details())

        return grpc.unary_unary_rpc_method_handler(unary)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--leader", required=True)
    ap.add_argument("--alternative", required=True)
    a = ap.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((Forwarder(a.leader, a.alternative),))
    server.add_insecure_port(a.listen)
    server.start()
    print(f"fake proxy on {a.listen}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
