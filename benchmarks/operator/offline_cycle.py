"""The operator's placement loop at benchmark scale, offline: no API server, no other process.

Run: ``PYTHONPATH=operator:worker:proto python benchmarks/operator/offline_cycle.py [--profile]``

Same nodes and pools as ``bench_operator.py`` (1,000 GPU nodes + 20 CPU nodes, 200 pools), but the
Kubernetes API is an in-memory fake that answers the operator's requests and binds every created
pod to its annotated node (Running and Ready) like kube-scheduler and kubelet would. It measures
what the real benchmark cannot separate: the CPU time of one cycle after

* a pool change (a model's minReplicas +1 or -1),
* the pods that change created being bound and becoming Ready (the watch echo),
* nothing at all (a resync),

with ``--profile`` printing the cProfile of the pool-change cycles. Use it to iterate; the real
benchmark is the judge.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import cProfile
import json
import pstats
import random
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "operator"), str(ROOT / "tests" / "operator")]

from fake_api import FakeKube  # noqa: E402

from benchmarks.operator.bench_operator import make_pools  # noqa: E402
from gpupool_operator.adapters.demands import demands_for, parse_pool, prices_from  # noqa: E402
from gpupool_operator.adapters.loop import PlacementLoop  # noqa: E402
from gpupool_operator.adapters.settings import OperatorSettings  # noqa: E402
from gpupool_operator.adapters.snapshot import build_snapshot  # noqa: E402
from gpupool_operator.adapters.store import Kind, Store  # noqa: E402
from gpupool_operator.api import default_config  # noqa: E402
from gpupool_operator.core.solver import Options, solve  # noqa: E402
from gpupool_operator.local.nodes import build_nodes  # noqa: E402
from gpupool_operator.local.spec import load  # noqa: E402

Obj = dict[str, Any]


def setup(pool_count: int) -> tuple[FakeKube, Store, PlacementLoop, list[Obj]]:
    spec = load(ROOT / "examples" / "clusters" / "large-fleet.yaml")
    everything = build_nodes(spec)
    gpu_nodes = [n for n in everything if "nvidia.com/gpu.present" in n["metadata"]["labels"]][:1000]
    cpu_nodes = [n for n in everything if "nvidia.com/gpu.present" not in n["metadata"]["labels"]][:20]
    store = Store()
    kube = FakeKube(store)
    for raw in gpu_nodes + cpu_nodes:
        node = copy.deepcopy(raw)
        node.setdefault("status", {}).setdefault("conditions", []).append({"type": "Ready", "status": "True"})
        node["status"].setdefault("allocatable", node["status"].get("capacity", {}))
        node["metadata"]["uid"] = f"uid-{node['metadata']['name']}"
        store.apply_event(Kind.NODE, "ADDED", kube._stamp(node))
    config = default_config().to_wire()
    config["metadata"]["uid"] = "uid-config"
    store.apply_event(Kind.CONFIG, "ADDED", kube._stamp(config))
    pools, _ = make_pools(pool_count)
    for i, pool in enumerate(pools):
        pool["metadata"].update(uid=f"uid-pool-{i}", generation=1)
        store.apply_event(Kind.POOL, "ADDED", kube._stamp(pool))
    reconciler = PlacementLoop(kube, store, OperatorSettings())
    reconciler._seeded = True
    kube.feed = reconciler.observer.feed
    return kube, store, reconciler, pools


async def _timed_cycle(reconciler: PlacementLoop, profiler: cProfile.Profile | None) -> tuple[Any, float]:
    """One placement cycle, its wall time, profiled when asked."""
    t = time.perf_counter()
    if profiler:
        profiler.enable()
    report = await reconciler.cycle()
    if profiler:
        profiler.disable()
    return report, time.perf_counter() - t


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    kube, store, reconciler, pools = setup(args.pools)
    t0 = time.perf_counter()
    for _ in range(12):  # apply everything, bind, lay out MIG, settle
        await reconciler.cycle()
        kube.mig_manager()
        kube.bind_all()
    settle_s = time.perf_counter() - t0
    rss_settled = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    await reconciler.cycle()
    running = sum(1 for p in store.all(Kind.POD) if p.get("spec", {}).get("nodeName"))
    rng = random.Random(11)
    change_s: list[float] = []
    echo_s: list[float] = []
    plan_s: list[float] = []
    idle_s: list[float] = []
    profiler = cProfile.Profile() if args.profile else None
    modes: dict[str, int] = {}
    relayouts = 0
    churn = [0, 0]  # pods created, deleted by the change cycles
    echo_modes: dict[str, int] = {}
    for i in range(args.changes):
        pool = rng.choice(pools)
        key = f"{pool['metadata']['namespace']}/{pool['metadata']['name']}"
        obj = copy.deepcopy(store.get(Kind.POOL, key))
        assert obj is not None
        model = obj["spec"]["models"][0]
        model["minReplicas"] += 1 if i % 2 == 0 or model["minReplicas"] <= 1 else -1
        obj["metadata"]["generation"] += 1
        store.apply_event(Kind.POOL, "MODIFIED", kube._stamp(obj))
        report, seconds = await _timed_cycle(reconciler, profiler)
        change_s.append(seconds)
        plan_s.append(report.plan_seconds)
        modes[report.mode] = modes.get(report.mode, 0) + 1
        churn[0] += report.created
        churn[1] += report.deleted
        relayouts += bool(reconciler.last_plan and reconciler.last_plan.layout_changes)
        status = (store.get(Kind.POOL, key) or {}).get("status") or {}
        assert status.get("observedGeneration") == obj["metadata"]["generation"], status
        kube.mig_manager()
        kube.bind_all()
        report, seconds = await _timed_cycle(reconciler, profiler)
        echo_s.append(seconds)
        echo_modes[report.mode] = echo_modes.get(report.mode, 0) + 1
        t = time.perf_counter()
        await reconciler.cycle()
        idle_s.append(time.perf_counter() - t)
    for _ in range(4):  # let re-layouts finish
        kube.mig_manager()
        kube.bind_all()
        await reconciler.cycle()
    plan = reconciler.last_plan
    assert plan is not None
    # the same cluster solved from scratch: the loop's plans must not cost more than that
    parsed = [parse_pool(o) for o in store.all(Kind.POOL)]
    index = {p.uid: f"{p.namespace}/{p.name}" for p in parsed}
    snapshot = build_snapshot(store.all(Kind.NODE), store.all(Kind.POD), prices_from(default_config()), time.time(),
                              pools=index)
    demands = demands_for([p.pool for p in parsed if p.pool is not None])
    fresh = solve(snapshot, demands, Options())
    assert reconciler.observer.snapshots.build(store.all(Kind.NODE), store.all(Kind.POD), prices_from(default_config()),
                                               time.time(), pools=index) == snapshot, "incremental snapshot differs"
    out = {
        "pods_running": running,
        "settle_s": round(settle_s, 2),
        "change_cycle_mean_s": round(statistics.mean(change_s), 4),
        "change_cycle_max_s": round(max(change_s), 4),
        "change_plan_mean_s": round(statistics.mean(plan_s), 4),
        "echo_cycle_mean_s": round(statistics.mean(echo_s), 4),
        "idle_cycle_mean_s": round(statistics.mean(idle_s), 4),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_settle_mib": rss_settled,
        "plan_cost_per_hour": round(plan.cost_per_hour, 2),
        "plan_assignments": len(plan.assignments),
        "plan_unplaced": sum(u.count for u in plan.unplaced),
        "fresh_solve_cost_per_hour": round(fresh.cost_per_hour, 2),
        "fresh_solve_moves": sum(1 for e in fresh.evictions if e.reason.startswith("moved")),
        "change_cycle_modes": modes,
        "change_cycles_created_deleted": churn,
        "echo_cycle_modes": echo_modes,
        "change_cycles_with_relayout": relayouts,
    }
    if profiler:
        pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.top)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", type=int, default=200)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sort", default="cumulative")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
