#!/usr/bin/env python3
"""Starts a real Milvus standalone server (PyPI `milvus`, 2.3.5) on loopback
ports chosen at run time, for the tests in this folder and test/sdk/run.sh.

    launch.py --dir DIR [--info FILE]

The PyPI package ships the Milvus server binary and its libraries
(lzma-compressed) and a config template. This script

  1. decompresses the binaries once into a cache beside the package
     (<venv>/milvus-<version>-bin, under a file lock: parallel starts share it),
  2. picks a free 127.0.0.1 port for every component (the gRPC proxy, the
     embedded etcd's client and peer URLs, the coordinators and nodes, the
     metrics/healthz HTTP port) by binding them all to port 0 at once,
  3. writes DIR/configs/milvus.yaml (data, rocksmq, etcd and logs under DIR)
     and DIR/configs/embedEtcd.yaml,
  4. writes FILE (default DIR/info.json): {"pid", "port", "metrics_port",
     "version", "dir"},
  5. asks the kernel to SIGKILL it when its parent dies (PR_SET_PDEATHSIG),
     so a test runner killed on a timeout leaves no server behind,
  6. execs `milvus run standalone` in place of itself: the PID the caller
     started is the server's.

Stop it with SIGKILL (its process group when the caller made one): after
work, Milvus 2.3 standalone often panics or hangs on SIGTERM, and the data
directory is thrown away anyway. Healthy = GET http://127.0.0.1:<metrics_port>/healthz
answers OK (Milvus serves /healthz on its metrics port).
"""

import argparse
import ctypes
import fcntl
import json
import os
import re
import signal
import socket
import sys

# Placeholders in the package's config.yaml.template that name a port, and
# the extra loopback ports the template does not cover.
PORT_KEYS = (
    "proxy_port",
    "proxy_internal_port",
    "root_coord_port",
    "query_coord_port",
    "query_node_port",
    "index_coord_port",
    "index_node_port",
    "data_coord_port",
    "data_node_port",
    "etcd_port",
)
EXTRA_PORTS = ("etcd_peer_port", "metrics_port")

PR_SET_PDEATHSIG = 1


def pick_ports(names):
    """Binds one socket per name to 127.0.0.1:0 at the same time (so the
    ports differ), then releases them all."""
    socks = []
    try:
        for _ in names:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return {n: s.getsockname()[1] for n, s in zip(names, socks)}
    finally:
        for s in socks:
            s.close()


def extract_binaries(pkg):
    """Decompresses the package's server binary and libraries once per
    package version into <sys.prefix>/milvus-<version>-bin (the package's own
    _initialize_data_files skips files whose .lzma checksum is unchanged)."""
    base = os.path.join(sys.prefix, f"milvus-{pkg.__version__}-bin")
    os.makedirs(base, exist_ok=True)
    with open(os.path.join(base, ".lock"), "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pkg._initialize_data_files(base)  # pylint: disable=protected-access
    return os.path.join(base, "bin")


def render_config(template, values):
    """Fills the template's {{ key(type): default }} placeholders from values
    (a missing key keeps its default) and pins every component's advertised
    address to loopback (by default Milvus registers the host's first
    unicast address)."""

    def fill(m):
        spec = m.group(1).strip()
        key, _, default = spec.partition(":")
        key = key.split("(")[0].strip()
        if key in values:
            return str(values[key])
        if default.strip():
            return default.strip()
        raise SystemExit(f"launch.py: config template placeholder {key!r} has no value")

    text = re.sub(r"\{\{(.*?)\}\}", fill, template)
    return re.sub(r"(?m)^  ip:.*$", "  ip: 127.0.0.1", text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--dir", required=True, help="a new or empty directory for the server's data, config and logs")
    ap.add_argument("--info", help="where to write the JSON with the chosen ports (default DIR/info.json)")
    args = ap.parse_args()
    parent = os.getppid()

    try:
        import milvus as pkg  # the PyPI `milvus` package (Milvus Lite 2.3.x)
    except ImportError:
        raise SystemExit(f"launch.py: {sys.executable} has no `milvus` package; install requirements.txt (milvus==2.3.5)")

    base = os.path.abspath(args.dir)
    conf_dir = os.path.join(base, "configs")
    logs_dir = os.path.join(base, "logs")
    data_dir = os.path.join(base, "data")
    for d in (conf_dir, logs_dir, data_dir):
        os.makedirs(d, exist_ok=True)

    bin_dir = extract_binaries(pkg)
    pkg_data = os.path.join(os.path.dirname(os.path.abspath(pkg.__file__)), "data")
    with open(os.path.join(pkg_data, "config.yaml.template"), encoding="utf-8") as f:
        template = f.read()

    ports = pick_ports(PORT_KEYS + EXTRA_PORTS)
    values = {k: ports[k] for k in PORT_KEYS}
    values.update(
        etcd_log_path=os.path.join(logs_dir, "etcd.log"),
        etcd_data_dir=os.path.join(data_dir, "etcd.data"),
        local_storage_dir=data_dir,
        rocksmq_data_dir=os.path.join(data_dir, "rocksmq"),
        system_log_path=logs_dir,
    )
    with open(os.path.join(conf_dir, "milvus.yaml"), "w", encoding="utf-8") as f:
        f.write(render_config(template, values))
    with open(os.path.join(pkg_data, "glog.conf"), encoding="utf-8") as src, open(
        os.path.join(conf_dir, "glog.conf"), "w", encoding="utf-8"
    ) as dst:
        dst.write(src.read())
    # The embedded etcd listens on 2379/2380 unless its own config file says
    # otherwise (Milvus reads that file's path from etcd.config.path).
    client = f"http://127.0.0.1:{ports['etcd_port']}"
    peer = f"http://127.0.0.1:{ports['etcd_peer_port']}"
    etcd_conf = os.path.join(conf_dir, "embedEtcd.yaml")
    with open(etcd_conf, "w", encoding="utf-8") as f:
        f.write(
            f"name: default\n"
            f"data-dir: {os.path.join(data_dir, 'etcd.data')}\n"
            f"listen-client-urls: {client}\n"
            f"advertise-client-urls: {client}\n"
            f"listen-peer-urls: {peer}\n"
            f"initial-advertise-peer-urls: {peer}\n"
            f"initial-cluster: default={peer}\n"
        )

    info = {
        "pid": os.getpid(),
        "port": ports["proxy_port"],
        "metrics_port": ports["metrics_port"],
        "version": pkg.__version__,
        "dir": base,
    }
    info_path = args.info or os.path.join(base, "info.json")
    tmp = info_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(info, f)
    os.replace(tmp, info_path)

    env = dict(os.environ)
    env.update(
        DEPLOY_MODE="STANDALONE",
        METRICS_PORT=str(ports["metrics_port"]),
        MILVUSCONF=conf_dir + "/",
        MILVUS_RUN_DIR=os.path.join(base, "run"),
        ETCD_USE_EMBED="true",
        ETCD_CONFIG_PATH=etcd_conf,
        LD_LIBRARY_PATH=":".join(p for p in (bin_dir, os.environ.get("LD_LIBRARY_PATH", "")) if p),
    )
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise SystemExit(f"launch.py: prctl(PR_SET_PDEATHSIG): {os.strerror(ctypes.get_errno())}")
        if os.getppid() != parent:  # the parent died before prctl took effect
            raise SystemExit("launch.py: parent exited before the server started")
    os.chdir(base)
    sys.stdout.flush()
    sys.stderr.flush()
    exe = os.path.join(bin_dir, "milvus")
    os.execve(exe, [exe, "run", "standalone"], env)


if __name__ == "__main__":
    main()
