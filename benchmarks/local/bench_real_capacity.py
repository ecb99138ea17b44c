"""How many real replicas fit on this machine: memory per real node and per worker, measured.

Root and the node binaries (``gpupool local build --nodes``); run it alone on the host, under the
real-node lock, e.g.::

    flock /tmp/gpupool-realnodes.lock env PYTHONPATH=operator:worker:proto \\
        python benchmarks/local/bench_real_capacity.py --mig-replicas 6

One local cluster with a real CPU node and a real A100 node (three emulated GPUs, two of them cut
into seven 1g.10gb slices each); the operator (``gpupool operator`` as a process) places the
quickstart pool (the real MiniLM on the CPU node) and a pool of ``--mig-replicas`` MiniLM replicas
on emulated 1g.10gb slices. Measured, after every replica answers a tritonclient request:

- the control plane's processes (etcd, kube-apiserver, -controller-manager, -scheduler, kwok),
  the operator, and each node's kubelet, containerd, device plugin and shims (VmRSS by recorded PID);
- each replica pod's memory from its own cgroup (``memory.usage_in_bytes`` and the RSS part of
  ``memory.stat``: the worker, its model and its Python environment, which the demo's local image
  mounts read-only from the host);
- the host's MemAvailable before the cluster, with it, and with every replica.

From these it writes how many replicas of each kind fit in the memory this machine has, keeping a
reserve for the host, the benchmark client and page cache (``--reserve-gib``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
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

NS = "capacity"
MIB = 2**20


def _meminfo_mib(key: str) -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/meminfo")


def _pod_cgroups(nodes: realnodes.RealNodes) -> dict[str, dict[str, float]]:
    """Per pod UID: its cgroup's memory use and RSS (MiB), found under each node's cgroup root."""
    out: dict[str, dict[str, float]] = {}
    for node in nodes.state.nodes.values():
        root = realnodes.CGROUP_ROOT / "memory" / node.cgroup_root.lstrip("/")
        for pod in root.rglob("pod*"):
            if not pod.is_dir() or not (pod / "memory.usage_in_bytes").exists():
                continue
            stat = dict(line.split() for line in (pod / "memory.stat").read_text().splitlines())
            out[pod.name.removeprefix("pod")] = {
                "usage": int((pod / "memory.usage_in_bytes").read_text()) / MIB,
                "rss": int(stat.get("total_rss", stat.get("rss", "0"))) / MIB,
                "cache": int(stat.get("total_cache", stat.get("cache", "0"))) / MIB}
    return out


def _pool(name: str, replicas: int) -> dict[str, Any]:
    return {"apiVersion": "gpupool.io/v1alpha1", "kind": "InferencePool", "metadata": {"name": name},
            "spec": {"models": [{
                "name": "minilm", "source": {"uri": "builtin://all-minilm-l6-v2", "format": "Builtin"},
                "acceleratorMemory": "1Gi", "minReplicas": replicas, "maxReplicas": replicas,
                "hardware": [{"type": "MIG", "mig": {"profile": "1g.10gb"}, "inferencesPerSecond": "400"}]}]}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mig-replicas", type=int, default=6, help="MiniLM replicas on emulated 1g.10gb slices")
    parser.add_argument("--reserve-gib", type=float, default=4.0,
                        help="memory kept for the host, the clients and page cache in the fit estimate")
    args = parser.parse_args()
    missing = realnodes.prerequisites()
    if missing:
        print("bench_real_capacity: skipped, real nodes cannot run here: missing " + "; ".join(missing),
              file=sys.stderr)
        return 0
    binaries = toolchain.ensure_node_binaries()
    before = realnodes.host_snapshot()
    row: dict[str, Any] = {"mig replicas": args.mig_replicas}
    avail0 = _meminfo_mib("MemAvailable")
    with tempfile.TemporaryDirectory(prefix="bench-capacity-") as tmp:
        cluster = LocalCluster(Path(tmp) / "c")
        nodes: realnodes.RealNodes | None = None
        operator: subprocess.Popen[bytes] | None = None
        try:
            cluster.start()
            nodes = realnodes.RealNodes(cluster, binaries)
            nodes.add("cpu-real-0", {"gpupool.io/pool": "cpu"})
            hw = Hardware.create("a100-real-0", "A100-80GB", [{"1g.10gb": 7}, {"1g.10gb": 7}, None])
            nodes.add("a100-real-0", {"gpupool.io/pool": "a100"}, hardware=hw,
                      taints=["nvidia.com/gpu=present:NoSchedule"])
            for ns in (NS, OPERATOR_NS):
                cluster.kubectl("create", "namespace", ns)
            cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
            cluster.wait_established("inferencepools.gpupool.io", timeout_s=60)
            cluster.kubectl("apply", "-f", str(ROOT / "examples" / "pools" / "gpupoolconfig-default.yaml"))
            time.sleep(3)
            row["control plane MiB"] = {k: round(realnodes._rss_mib(p), 1) for k, p in cluster.state.pids.items()}
            row["nodes MiB (no pods)"] = {n: {k: round(v, 1) for k, v in m.items() if k != "pods (cgroup)"}
                                          for n, m in nodes.memory_mib().items()}
            avail1 = _meminfo_mib("MemAvailable")
            operator = start_operator(cluster, nodes.host.tag)
            api = cluster.api_client()
            t0 = time.monotonic()
            cluster.kubectl("apply", "-n", NS, "-f", str(ROOT / "examples" / "pools" / "quickstart-minilm-cpu.yaml"))
            cluster.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(_pool("on-slices", args.mig_replicas)))
            until("the quickstart endpoint", lambda: endpoints.endpoints(api, NS, "quickstart"), 300)
            until(f"{args.mig_replicas} slice endpoints",
                   lambda: len(endpoints.endpoints(api, NS, "on-slices")) >= args.mig_replicas, 600)
            row["apply to every replica Ready s"] = round(time.monotonic() - t0, 1)
            for pool, model in (("quickstart", "all-minilm-l6-v2"), ("on-slices", "minilm")):
                for ep in endpoints.endpoints(api, NS, pool):
                    endpoints.send(ep.address, model, requests=3, timeout_s=30)
            time.sleep(2)
            row["operator MiB"] = round(realnodes._rss_mib(operator.pid), 1)
            row["nodes MiB"] = {n: {k: round(v, 1) for k, v in m.items()} for n, m in nodes.memory_mib().items()}
            pods = json.loads(cluster.kubectl("get", "pods", "-n", NS, "-o", "json").stdout)["items"]
            by_uid = _pod_cgroups(nodes)
            per: dict[str, list[dict[str, float]]] = {"cpu (real MiniLM)": [], "1g.10gb (emulated)": []}
            for pod in pods:
                got = by_uid.get(pod["metadata"]["uid"])
                if got is None:
                    continue
                kind = "cpu (real MiniLM)" if pod["spec"].get("nodeName") == "cpu-real-0" else "1g.10gb (emulated)"
                per[kind].append({k: round(v, 1) for k, v in got.items()})
            row["replica pods MiB"] = per
            row["host MemAvailable MiB"] = {"before the cluster": round(avail0), "cluster, no replicas": round(avail1),
                                            "every replica serving": round(_meminfo_mib("MemAvailable"))}
        finally:
            if operator is not None:
                stop_operator(cluster, operator, NS)
            if nodes is not None:
                nodes.teardown()
            cluster.stop()
    restored = realnodes.host_snapshot() == before
    row["host restored"] = restored

    total = _meminfo_mib("MemTotal")
    plane = sum(row["control plane MiB"].values()) + row["operator MiB"]
    # a node's fixed cost: kubelet, containerd, device plugin; each pod adds its cgroup and its shim
    node_cost = {n: sum(v for k, v in m.items() if k not in ("pods (cgroup)", "shims"))
                 for n, m in row["nodes MiB"].items()}
    n_pods = sum(len(v) for v in row["replica pods MiB"].values())
    shim = sum(m.get("shims", 0.0) for m in row["nodes MiB"].values()) / max(1, n_pods)
    row["shim per pod MiB"] = round(shim, 1)
    med = {k: statistics.median(p["usage"] for p in v) + shim for k, v in row["replica pods MiB"].items() if v}
    budget = total - args.reserve_gib * 1024 - plane - sum(node_cost.values())
    fits = {k: int(budget // v) for k, v in med.items() if v > 0}
    row["fit estimate"] = {"memory total MiB": round(total), "reserve MiB": args.reserve_gib * 1024,
                           "left for replicas MiB": round(budget), "replicas of one kind that fit": fits}
    lines = ["| what | MiB |", "|---|---|"]
    lines += [f"| control plane: {k} | {v} |" for k, v in row["control plane MiB"].items()]
    lines.append(f"| operator | {row['operator MiB']} |")
    for n, m in row["nodes MiB"].items():
        parts = ", ".join(f"{k} {v}" for k, v in m.items() if k not in ("pods (cgroup)", "shims"))
        lines.append(f"| node {n} (fixed): {parts} | {node_cost[n]:.1f} |")
    for kind, pods_ in row["replica pods MiB"].items():
        if pods_:
            lines.append(f"| replica, {kind}: pod cgroup median of {len(pods_)} "
                         f"(RSS {statistics.median(p['rss'] for p in pods_):.1f}, page cache "
                         f"{statistics.median(p['cache'] for p in pods_):.1f}) + its containerd shim {shim:.1f} "
                         f"| {med[kind]:.1f} |")
    md = "\n".join(lines) + (
        f"\n\nEvery replica ({args.mig_replicas} on emulated 1g.10gb slices, 1 real MiniLM on the CPU node) Ready "
        f"{row['apply to every replica Ready s']} s after `kubectl apply`. Host MemAvailable (MiB): "
        f"`{json.dumps(row['host MemAvailable MiB'])}`.\n\n"
        f"Fit on this machine ({round(total)} MiB, {args.reserve_gib:g} GiB kept for the host, clients and page "
        f"cache, control plane, operator and these two nodes counted): {round(budget)} MiB for replicas, so "
        + ", ".join(f"{n} replicas {k}" for k, n in fits.items())
        + " if all were of one kind. Each further real node costs its kubelet, containerd (and, with GPUs, the "
        "device plugin) as in the table. The worker in these pods runs from the host's project environment "
        "(the demo's local image mounts it read-only), which has torch: the CPU worker image without torch needs "
        "less (its start-to-ready memory: benchmarks/results/worker-torch-free.md). CPU replicas are bound by "
        "the machine's real cores first. Host after teardown equal to before: " + f"{restored}.\n")
    print(_results.write("local-real-capacity", row, md))
    return 0 if restored else 1


if __name__ == "__main__":
    sys.exit(main())
