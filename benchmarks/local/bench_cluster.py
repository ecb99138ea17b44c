"""Local control plane: boot time, registering 1,000+ fake GPU nodes, resident memory per component.

Run: ``PYTHONPATH=operator:worker:proto python benchmarks/local/bench_cluster.py [--nodes N]``
(``make bench`` runs it with the rest). It boots a fresh cluster in a temporary directory (cold:
new PKI and empty etcd), restarts it (warm: same data), registers the large example fleet's GPU
nodes once with one client thread and once with 16 (side by side, as a ratio), waits until KWOK
reports every node Ready, and samples each component's RSS from /proc.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from benchmarks._results import write  # noqa: E402
from gpupool_operator.local import toolchain  # noqa: E402
from gpupool_operator.local.cluster import LocalCluster  # noqa: E402
from gpupool_operator.local.nodes import build_nodes, register_nodes  # noqa: E402
from gpupool_operator.local.spec import load  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def ready_count(cluster: LocalCluster) -> int:
    items = json.loads(cluster.kubectl("get", "nodes", "-o", "json", timeout_s=300).stdout)["items"]
    return sum(
        1
        for n in items
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000, help="GPU nodes to register per pass (default 1000)")
    args = parser.parse_args()
    binaries = toolchain.ensure_binaries()
    spec = load(ROOT / "examples" / "clusters" / "large-fleet.yaml")
    gpu_nodes = [n for n in build_nodes(spec) if "nvidia.com/gpu.present" in n["metadata"]["labels"]][: args.nodes]
    gpus = sum(int(n["metadata"]["labels"]["nvidia.com/gpu.count"]) for n in gpu_nodes)

    with tempfile.TemporaryDirectory(prefix="gpupool-bench-") as tmp:
        cluster = LocalCluster(Path(tmp) / "c", binaries)
        t0 = time.monotonic()
        cluster.start()
        cold_boot = time.monotonic() - t0
        cluster.stop()
        t0 = time.monotonic()
        cluster.start()
        warm_boot = time.monotonic() - t0
        try:
            api = cluster.api_client()
            # Side by side: the first tenth of the nodes with one client thread, the rest with 16.
            tenth = len(gpu_nodes) // 10
            t_start = t0 = time.monotonic()
            register_nodes(api, gpu_nodes[:tenth], workers=1, progress=None)
            serial_rate = tenth / (time.monotonic() - t0)
            t0 = time.monotonic()
            register_nodes(api, gpu_nodes[tenth:], workers=16)
            parallel_rate = (len(gpu_nodes) - tenth) / (time.monotonic() - t0)
            register_s = time.monotonic() - t_start
            deadline = time.monotonic() + 600
            while ready_count(cluster) < len(gpu_nodes) and time.monotonic() < deadline:
                time.sleep(1)
            all_ready_s = time.monotonic() - t_start
            ready = ready_count(cluster)
            rss = {name: round(rss_mib(pid), 1) for name, pid in cluster.state.pids.items()}
            api.close()  # type: ignore[attr-defined]
        finally:
            cluster.stop()

    data = {
        "kubernetes_version": toolchain.KUBERNETES_VERSION,
        "etcd_version": toolchain.ETCD_VERSION,
        "kwok_version": toolchain.KWOK_VERSION,
        "cold_boot_s": round(cold_boot, 2),
        "warm_boot_s": round(warm_boot, 2),
        "gpu_nodes": len(gpu_nodes),
        "gpus": gpus,
        "register_s": round(register_s, 2),
        "register_nodes_per_s_16_threads": round(parallel_rate, 1),
        "register_nodes_per_s_1_thread": round(serial_rate, 1),
        "parallel_speedup": round(parallel_rate / serial_rate, 2),
        "all_ready_s": round(all_ready_s, 2),
        "ready_nodes": ready,
        "rss_mib": rss,
        "rss_total_mib": round(sum(rss.values()), 1),
    }
    rows = "\n".join(f"| {k} | {v} |" for k, v in rss.items())
    md = f"""| measure | value |
|---|---|
| cold boot (new PKI, empty etcd) | {data["cold_boot_s"]} s |
| warm boot (restart on same data) | {data["warm_boot_s"]} s |
| register {len(gpu_nodes)} GPU nodes ({gpus} GPUs) | {data["register_s"]} s |
| registration rate, 16 client threads | {data["register_nodes_per_s_16_threads"]} nodes/s |
| registration rate, 1 client thread | {data["register_nodes_per_s_1_thread"]} nodes/s |
| 16 threads vs 1 | {data["parallel_speedup"]}x |
| from first create to all {ready} nodes Ready (KWOK) | {data["all_ready_s"]} s |

Resident memory after registration (MiB):

| component | RSS |
|---|---|
{rows}
| **total** | **{data["rss_total_mib"]}** |
"""
    print(md)
    print(f"written: {write('local-cluster', data, md)}")
    return 0 if ready == len(gpu_nodes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
