"""Real kubelet nodes on the local cluster: time to a Ready node, to a started pod and to the first
replica of a pool serving; alone, and with a second local cluster's real nodes running beside it.

Root and the node binaries (``gpupool local build --nodes``); run it alone on the host, under the
real-node lock, e.g.::

    flock /tmp/gpupool-realnodes.lock env PYTHONPATH=operator:worker:proto python benchmarks/local/bench_real_nodes.py

Per cluster: the control plane's start, a CPU node Ready (kubelet, containerd, CNI bridge), an
A100 node with three emulated GPUs (MIG) Ready with its devices in allocatable, ``--pods`` pods of
the worker image from apply to Ready one after the other, then the operator (``gpupool operator``
as a process) and the quickstart pool from ``kubectl apply`` to a ready endpoint that answers a
tritonclient request. Cluster "second" starts while "first" still runs with its nodes and
replica, so its numbers are the concurrent ones, like for like with "first"'s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from benchmarks import _results  # noqa: E402
from benchmarks.local._real_cluster import OPERATOR_NS, start_operator, stop_operator, until  # noqa: E402
from gpupool_operator.local import endpoints, realnodes, toolchain  # noqa: E402
from gpupool_operator.local.cluster import LocalCluster  # noqa: E402
from gpupool_operator.local.gpus import Hardware  # noqa: E402

NS = "bench"


def _pod(name: str, node: str, image: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{
                "name": "c", "image": image, "imagePullPolicy": "Never", "command": ["sh", "-c", "sleep 600"]}]}}


def _ready(cluster: LocalCluster, name: str) -> bool:
    proc = cluster.kubectl("get", "pod", name, "-n", NS, "-o", "json", check=False)
    if proc.returncode != 0:
        return False
    conds = json.loads(proc.stdout).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def _answers(address: str, model: str) -> bool:
    try:
        endpoints.send(address, model, requests=1, timeout_s=10)
        return True
    except Exception:  # not serving yet
        return False


def run_cluster(tag: str, work: Path, binaries: toolchain.NodeBinaries, pods: int) -> tuple[dict[str, Any], Any]:
    row: dict[str, Any] = {"cluster": tag}
    cluster = LocalCluster(work / tag)
    t0 = time.monotonic()
    cluster.start()
    row["control plane up s"] = time.monotonic() - t0
    nodes = realnodes.RealNodes(cluster, binaries)
    t0 = time.monotonic()
    nodes.add("cpu-real-0", {"gpupool.io/pool": "cpu"})
    row["CPU node Ready s"] = time.monotonic() - t0
    hw = Hardware.create("a100-real-0", "A100-80GB", [{"3g.40gb": 1, "2g.20gb": 1, "1g.10gb": 2}, {"1g.10gb": 7}, None])
    t0 = time.monotonic()
    nodes.add("a100-real-0", {"gpupool.io/pool": "a100"}, hardware=hw, taints=["nvidia.com/gpu=present:NoSchedule"])
    row["A100 node Ready (devices allocatable) s"] = time.monotonic() - t0
    for ns in (NS, OPERATOR_NS):
        cluster.kubectl("create", "namespace", ns)
    starts = []
    for i in range(pods):
        name = f"p{i}"
        t0 = time.monotonic()
        cluster.kubectl("apply", "-f", "-", input=json.dumps(_pod(name, "cpu-real-0", nodes.host.tag)))
        until(f"pod {name} Ready", lambda n=name: _ready(cluster, n), 120)  # type: ignore[misc]
        starts.append(time.monotonic() - t0)
        cluster.kubectl("delete", "pod", name, "-n", NS, "--wait=true", "--timeout=60s")
    row["pod apply to Ready s (median)"] = statistics.median(starts)
    row["pod apply to Ready s (all)"] = [round(s, 2) for s in starts]

    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    cluster.wait_established("inferencepools.gpupool.io", timeout_s=60)
    cluster.kubectl("apply", "-f", str(ROOT / "examples" / "pools" / "gpupoolconfig-default.yaml"))
    operator = start_operator(cluster, nodes.host.tag, {"GPUPOOL_LEASE_SECONDS": "6"})
    api = cluster.api_client()
    t0 = time.monotonic()
    cluster.kubectl("apply", "-n", NS, "-f", str(ROOT / "examples" / "pools" / "quickstart-minilm-cpu.yaml"))
    until("a quickstart endpoint", lambda: endpoints.endpoints(api, NS, "quickstart"), 300)
    row["quickstart apply to endpoint Ready s"] = time.monotonic() - t0
    (ep,) = endpoints.endpoints(api, NS, "quickstart")
    until("the replica to answer", lambda: _answers(ep.address, "all-minilm-l6-v2"), 60)
    row["quickstart apply to first answer s"] = time.monotonic() - t0
    row["memory MiB"] = {n: {k: round(v, 1) for k, v in m.items()} for n, m in nodes.memory_mib().items()}
    return row, (cluster, nodes, operator)


def stop(handle: Any) -> float:
    cluster, nodes, operator = handle
    t0 = time.monotonic()
    stop_operator(cluster, operator, NS)
    nodes.teardown()
    cluster.stop()
    return time.monotonic() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pods", type=int, default=5, help="pods started one after the other per cluster")
    args = parser.parse_args()
    missing = realnodes.prerequisites()
    if missing:
        print("bench_real_nodes: skipped, real nodes cannot run here: missing " + "; ".join(missing),
              file=sys.stderr)
        return 0  # `make bench` runs every benchmark; this one needs root
    binaries = toolchain.ensure_node_binaries()
    before = realnodes.host_snapshot()
    rows: list[dict[str, Any]] = []
    handles: list[Any] = []
    with tempfile.TemporaryDirectory(prefix="bench-real-nodes-") as tmp:
        try:
            for tag in ("first", "second"):  # "second" runs beside "first"
                row, handle = run_cluster(tag, Path(tmp), binaries, args.pods)
                handles.append(handle)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
            rows[1]["teardown s (the other still up)"] = stop(handles.pop(1))
            rows[0]["teardown s (the last one: host restored)"] = stop(handles.pop(0))
        finally:
            for handle in handles:
                stop(handle)
    restored = realnodes.host_snapshot() == before
    keys = [k for k in rows[0] if k not in ("cluster", "memory MiB", "pod apply to Ready s (all)")
            and not k.startswith("teardown")]
    lines = ["| measure | first (alone) | second (beside first) | second / first |", "|---|---|---|---|"]
    for k in keys:
        a, b = rows[0][k], rows[1][k]
        lines.append(f"| {k} | {a:.2f} | {b:.2f} | {b / a:.2f}x |")
    lines.append(f"| teardown s | {rows[0]['teardown s (the last one: host restored)']:.2f} (last, host restored) | "
                 f"{rows[1]['teardown s (the other still up)']:.2f} (first still up) | |")
    md = "\n".join(lines) + (
        f"\n\nPods one after the other (s): first {rows[0]['pod apply to Ready s (all)']}, "
        f"second {rows[1]['pod apply to Ready s (all)']}.\n\nHost after both teardowns equal to before: "
        f"{restored}.\n\nResident memory (MiB, first cluster, with its quickstart replica): "
        f"`{json.dumps(rows[0]['memory MiB'])}`\n")
    print(_results.write("local-real-nodes", {"rows": rows, "host_restored": restored}, md))
    return 0 if restored else 1


if __name__ == "__main__":
    sys.exit(main())
