"""Placement speed at fleet scale: 5,000 nodes (40,000 GPUs) and ~10,000 replicas.

Run: ``PYTHONPATH=operator:worker:proto python benchmarks/placement/bench_speed.py [--nodes 5000 --replicas 10000]``

Measures, side by side in one process: building the snapshot from Node objects (the adapter),
a full plan with the default options (which at this size run one portfolio variant and bounded
repair moves), the greedy alone, an incremental re-plan after one pool changes (the previous
plan's replicas given as running pods, so they are kept and only the changed model is placed), and
peak memory (tracemalloc) of a full plan. Times are best-of-N wall clock on this machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "operator"), str(Path(__file__).resolve().parent)]

from instances import large  # noqa: E402

from benchmarks._results import write  # noqa: E402
from gpupool_operator.core.demand import ShapeKind  # noqa: E402
from gpupool_operator.core.inventory import Holding, Snapshot  # noqa: E402
from gpupool_operator.core.plan import Plan  # noqa: E402
from gpupool_operator.core.solver import Options, Planner, solve  # noqa: E402
from gpupool_operator.core.verify import problems  # noqa: E402


def timed(fn, repeat: int, cpu: list[float] | None = None) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    """Best wall time of ``repeat`` runs; the best process CPU time is appended to ``cpu`` (CPU time
    is far less sensitive than wall time to other work on a shared machine)."""
    best = float("inf")
    best_cpu = float("inf")
    out = None
    for _ in range(repeat):
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    if cpu is not None:
        cpu.append(best_cpu)
    return best, out


def running(snapshot: Snapshot, plan: Plan, pods: bool = True) -> Snapshot:
    """The cluster after ``plan`` was applied: its MIG layouts, and its replicas as running pods."""
    by_node: dict[str, list[Holding]] = {}
    for a in plan.assignments:
        if a.shape.kind is ShapeKind.MIG:
            h = Holding(f"{a.demand}-{a.replica}", owner=a.demand, instance=(a.gpus[0], a.shape.profile, a.start or 0))
        elif a.shape.kind is ShapeKind.GPU:
            h = Holding(f"{a.demand}-{a.replica}", owner=a.demand, gpus=a.gpus)
        else:
            h = Holding(f"{a.demand}-{a.replica}", owner=a.demand, cpu_millis=a.shape.cpu_millis,
                        memory_mib=a.shape.memory_mib)
        by_node.setdefault(a.node, []).append(h)
    changes = {(c.node, c.gpu): c.after for c in plan.layout_changes}
    nodes = []
    for n in snapshot.nodes:
        gpus = tuple(dataclasses.replace(g, layout=changes.get((n.name, g.index), g.layout)) for g in n.gpus)
        extra = tuple(by_node.get(n.name, ())) if pods else ()
        nodes.append(dataclasses.replace(n, gpus=gpus, holdings=n.holdings + extra))
    return dataclasses.replace(snapshot, nodes=tuple(nodes))


def _moved(before: Plan, after: Plan) -> int:
    """Replicas of the first plan whose (node, GPUs, instance) differ in the second."""
    def places(plan: Plan) -> dict[str, list[tuple[str, tuple[int, ...], int | None]]]:
        out: dict[str, list[tuple[str, tuple[int, ...], int | None]]] = {}
        for a in plan.assignments:
            out.setdefault(a.demand, []).append((a.node, a.gpus, a.start))
        return out

    b, a = places(before), places(after)
    moved = 0
    for key, old in b.items():
        new = list(a.get(key, []))
        for p in old:
            if p in new:
                new.remove(p)
            else:
                moved += 1
    return moved


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--replicas", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    inst = large(7, args.nodes, args.replicas)
    snap, demands = inst.snapshot, inst.demands
    gpus = snap.gpu_count
    wanted = sum(d.replicas for d in demands)

    # The adapter: Node objects (as kubectl prints them) -> snapshot.
    from gpupool_operator.adapters.inventory import snapshot_from_objects
    from gpupool_operator.local import nodes as fake_nodes
    from gpupool_operator.local.spec import parse

    spec = parse({"name": "bench", "pools": [
        {"name": "h100", "count": args.nodes // 2, "gpu": "H100-80GB", "gpusPerNode": 8, "cpu": 192,
         "memoryGiB": 2048},
        {"name": "a100-mig", "count": args.nodes - args.nodes // 2, "gpu": "A100-80GB", "gpusPerNode": 8,
         "cpu": 96, "memoryGiB": 1152,
         "mig": {"strategy": "mixed", "layout": {"3g.40gb": 1, "2g.20gb": 1, "1g.10gb": 2}}},
    ]})
    objects = fake_nodes.build_nodes(spec)
    adapter_s, _ = timed(lambda: snapshot_from_objects(objects), args.repeat)

    full_cpu: list[float] = []
    full_s, plan = timed(lambda: solve(snap, demands), args.repeat, full_cpu)
    assert isinstance(plan, Plan)
    one_s, plan1 = timed(lambda: solve(snap, demands, Options(improve=False)), args.repeat)
    assert isinstance(plan1, Plan)
    bad = problems(snap, demands, plan)
    if bad:
        raise SystemExit(f"invalid plan: {bad[:3]}")

    # Incremental: the plan is running; one pool (model) scales up by 20 replicas and re-plans.
    after = running(snap, plan)
    changed = list(demands)
    k = max(range(len(changed)), key=lambda i: changed[i].replicas)
    changed[k] = dataclasses.replace(changed[k], replicas=changed[k].replicas + 20)
    resolve_s, plan2 = timed(lambda: solve(after, changed), args.repeat)
    assert isinstance(plan2, Plan)
    kept = sum(1 for a in plan2.assignments if a.pod)
    inc_bad = problems(after, changed, plan2)
    if inc_bad:
        raise SystemExit(f"invalid re-solve plan: {inc_bad[:3]}")
    # The incremental path: a Planner keeps the full solve's state; one model changes.
    inc_times = []
    inc_cpu = []
    for _ in range(args.repeat):
        planner = Planner(snap)
        planner.plan(demands)
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        plan3 = planner.replan(changed)
        inc_times.append(time.perf_counter() - t0)
        inc_cpu.append(time.process_time() - c0)
    inc_s = min(inc_times)
    moved = _moved(plan, plan3)
    inc3_bad = problems(running(snap, plan, pods=False), changed, plan3)
    if inc3_bad:
        raise SystemExit(f"invalid incremental plan: {inc3_bad[:3]}")

    tracemalloc.start()
    solve(snap, demands)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    load = os.getloadavg()
    data = {
        "load_average_1_5_15": load,
        "nodes": len(snap.nodes), "gpus": gpus, "models": len(demands), "replicas": wanted,
        "placed": len(plan.assignments), "cost_per_hour": plan.cost_per_hour, "gpus_used": plan.gpus_used,
        "adapter_nodes": len(objects), "adapter_s": adapter_s,
        "solve_full_s": full_s, "solve_full_cpu_s": full_cpu[0], "incremental_cpu_s": min(inc_cpu),
        "solve_greedy_only_s": one_s, "greedy_only_cost_per_hour": plan1.cost_per_hour,
        "incremental_s": inc_s, "incremental_moved": moved, "incremental_placed": len(plan3.assignments),
        "resolve_with_running_s": resolve_s, "resolve_kept": kept,
        "peak_memory_mib": peak / 2**20, "repeat": args.repeat,
    }
    md = "\n".join([
        f"{len(snap.nodes)} nodes ({gpus} GPUs, mixed A100/H100/H200/B200, 25% with MIG layouts, 5% foreign pods, "
        f"15% spot), {len(demands)} models, {wanted} replicas. Best of {args.repeat} runs.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| full plan, default options (at this size: 1 portfolio variant, bounded repairs) | {full_s:.2f} s "
        f"(CPU time {full_cpu[0]:.2f} s) |",
        f"| greedy only, no repair moves | {one_s:.2f} s "
        f"(${plan1.cost_per_hour:.2f}/h vs ${plan.cost_per_hour:.2f}/h) |",
        f"| replicas placed | {len(plan.assignments)} of {wanted} on {plan.gpus_used} GPUs, "
        f"${plan.cost_per_hour:.2f}/h |",
        f"| incremental re-plan after one model +20 replicas (Planner.replan; {moved} replicas moved) "
        f"| {inc_s * 1000:.0f} ms (CPU time {min(inc_cpu) * 1000:.0f} ms) |",
        f"| full re-solve of the same change from a snapshot with the plan running ({kept} kept) "
        f"| {resolve_s * 1000:.0f} ms |",
        f"| snapshot from {len(objects)} Node objects (adapter) | {adapter_s:.2f} s |",
        f"| peak memory of a full plan (tracemalloc) | {peak / 2**20:.0f} MiB |",
        "",
        f"Machine load average when recorded (1/5/15 min, {os.cpu_count()} CPUs): "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}; other work on this shared machine slows every row alike "
        "(process CPU time, shown for the two goal rows, much less so).",
    ])
    path = write("placement-speed", data, md)
    print(md)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
