"""Placement quality on a broad suite: the heuristic against the exact MILP optimum and against what
users run today, side by side on the same instances.

Run: ``PYTHONPATH=operator:worker:proto python benchmarks/placement/bench_quality.py [--per-family 48]``

The suite (``instances.suite``): seeded instances of every family, ``base`` (mixes small/mixed/llm,
2-9 GPU nodes of 4-8 GPUs, CPU nodes, spot, existing MIG layouts, foreign pods), ``tainted``
(NVIDIA's GPU taint, dedicated NoSchedule taints some models tolerate, PreferNoSchedule),
``pending-mig`` (GPUs a pending MIG change takes away), ``cordoned`` (cordoned and NotReady nodes)
and ``all``; plus one fleet of ``--large-nodes`` nodes of mixed products with every family's
features (no MILP there: too large; the baselines only).

For each instance: the heuristic's $/h; the exact optimum's (HiGHS, time-limited; the gap is
measured only where the MILP proved optimality and both left the same replicas of each model
unplaced); and the baselines: a KAI-Scheduler/Kueue-like scheduler that keeps each GPU's MIG layout
and places first fit, cheapest slice first (``core.baselines.first_fit_cheapest_slice``), the
same on NVIDIA's ``all-balanced`` layout, whole-GPU first fit and a kube-scheduler-like spread.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "operator"), str(Path(__file__).resolve().parent)]

from instances import FAMILIES, large, suite, with_family  # noqa: E402

from benchmarks._results import write  # noqa: E402
from gpupool_operator.core.baselines import first_fit_cheapest_slice, spread, whole_gpu_first_fit  # noqa: E402
from gpupool_operator.core.exact import solve_exact  # noqa: E402
from gpupool_operator.core.solver import Options, solve  # noqa: E402
from gpupool_operator.core.verify import problems  # noqa: E402

BASELINES = {
    "kai": lambda s, d: first_fit_cheapest_slice(s, d, "current"),
    "kai_balanced": lambda s, d: first_fit_cheapest_slice(s, d, "all-balanced"),
    "first_fit": whole_gpu_first_fit,
    "spread": spread,
}
LABELS = {"kai": "KAI/Kueue-like, current MIG layouts", "kai_balanced": "KAI/Kueue-like, NVIDIA all-balanced",
          "first_fit": "whole-GPU first fit", "spread": "k8s-like spread"}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))] if xs else float("nan")


def baselines(row: dict[str, Any], snapshot: Any, demands: Any) -> None:
    for name, fn in BASELINES.items():
        t0 = time.perf_counter()
        result = fn(snapshot, demands)
        row[name], row[f"{name}_placed"], row[f"{name}_ms"] = (result.cost_per_hour, result.placed,
                                                              (time.perf_counter() - t0) * 1000)


def comparison(rows: list[dict[str, Any]], base: str) -> dict[str, Any]:
    """The heuristic against one baseline: $/h saved where both placed the same replicas, and the
    replicas only the heuristic placed (and any only the baseline placed)."""
    equal = [r for r in rows if r[f"{base}_placed"] == r["heuristic_placed"] and r[base] > 0]
    savings = [100 * (1 - r["heuristic"] / r[base]) for r in equal]
    total = sum(r[base] for r in equal)
    return {
        "equal_instances": len(equal),
        "saving_median_pct": statistics.median(savings) if savings else None,
        "saving_total_pct": 100 * (1 - sum(r["heuristic"] for r in equal) / total) if total else None,
        "only_gpupool_replicas": sum(max(0, r["heuristic_placed"] - r[f"{base}_placed"]) for r in rows),
        "only_gpupool_instances": sum(1 for r in rows if r["heuristic_placed"] > r[f"{base}_placed"]),
        "only_baseline_replicas": sum(max(0, r[f"{base}_placed"] - r["heuristic_placed"]) for r in rows),
    }


def gaps(rows: list[dict[str, Any]]) -> dict[str, Any]:
    comparable = [r for r in rows if r["exact_status"] == "optimal" and r["same_unplaced"]]
    g = [r["gap_pct"] for r in comparable]
    worst = sorted(comparable, key=lambda r: -r["gap_pct"])[:5]
    return {
        "instances": len(rows), "comparable": len(comparable),
        "median_pct": statistics.median(g) if g else None, "p90_pct": pct(g, 0.9), "worst_pct": max(g, default=None),
        "optimal_share": sum(1 for x in g if x < 1e-6) / len(g) if g else None,
        "fewer_than_exact": [r["instance"] for r in rows if r["heuristic_placed"] < r["exact_placed"]],
        "exact_not_optimal": sum(1 for r in rows if r["exact_status"] != "optimal"),
        "worst": [{"instance": r["instance"], "gap_pct": r["gap_pct"]} for r in worst],
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-family", type=int, default=48)
    ap.add_argument("--time-limit", type=float, default=20.0)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--large-nodes", type=int, default=5000, help="0: no fleet-scale instance")
    ap.add_argument("--large-replicas", type=int, default=10000)
    args = ap.parse_args()
    rows = []
    for inst in suite(args.per_family, args.first_seed):
        family = inst.name.rsplit("-", 1)[-1] if not inst.name.endswith("pending-mig") else "pending-mig"
        t0, c0 = time.perf_counter(), time.process_time()
        plan = solve(inst.snapshot, inst.demands)
        heur_s, heur_cpu = time.perf_counter() - t0, time.process_time() - c0
        c0 = time.process_time()  # the same without kicks (core/kick.py), for what they cost and bring
        unkicked = solve(inst.snapshot, inst.demands, Options(kicks=0))
        unkicked_cpu = time.process_time() - c0
        bad = problems(inst.snapshot, inst.demands, plan)
        if bad:
            raise SystemExit(f"{inst.name}: invalid plan: {bad[:3]}")
        t0 = time.perf_counter()
        exact = solve_exact(inst.snapshot, inst.demands, time_limit=args.time_limit)
        exact_s = time.perf_counter() - t0
        wanted = sum(d.replicas for d in inst.demands)
        row: dict[str, Any] = {
            "instance": inst.name, "family": family if family in FAMILIES else "base", "mix": inst.mix,
            "nodes": len(inst.snapshot.nodes), "gpus": inst.snapshot.gpu_count, "models": len(inst.demands),
            "replicas": wanted, "heuristic": plan.cost_per_hour, "heuristic_placed": len(plan.assignments),
            "heuristic_ms": heur_s * 1000, "heuristic_cpu_ms": heur_cpu * 1000,
            "no_kicks": unkicked.cost_per_hour, "no_kicks_placed": len(unkicked.assignments),
            "no_kicks_cpu_ms": unkicked_cpu * 1000,
            "exact": exact.cost_per_hour, "exact_bound": exact.lower_bound,
            "exact_status": exact.status, "exact_placed": wanted - sum(exact.unplaced.values()),
            "exact_ms": exact_s * 1000,
            "same_unplaced": {u.demand: u.count for u in plan.unplaced} == dict(exact.unplaced),
        }
        row["gap_pct"] = 100 * (plan.cost_per_hour - exact.cost_per_hour) / exact.cost_per_hour \
            if exact.cost_per_hour > 0 else 0.0
        row["no_kicks_gap_pct"] = 100 * (unkicked.cost_per_hour - exact.cost_per_hour) / exact.cost_per_hour \
            if exact.cost_per_hour > 0 else 0.0
        baselines(row, inst.snapshot, inst.demands)
        rows.append(row)
        print(f"{inst.name:36s} heur {plan.cost_per_hour:8.2f} ({row['heuristic_placed']}/{wanted})  exact "
              f"{exact.cost_per_hour:8.2f} ({row['exact_placed']}, {exact.status})  kai {row['kai']:8.2f} "
              f"({row['kai_placed']})", flush=True)

    fleet: dict[str, Any] | None = None
    if args.large_nodes:
        inst = with_family(large(7, args.large_nodes, args.large_replicas), "all", random.Random(7))
        t0, c0 = time.perf_counter(), time.process_time()
        plan = solve(inst.snapshot, inst.demands)
        fleet = {"instance": inst.name, "nodes": len(inst.snapshot.nodes), "gpus": inst.snapshot.gpu_count,
                 "models": len(inst.demands), "replicas": sum(d.replicas for d in inst.demands),
                 "heuristic": plan.cost_per_hour, "heuristic_placed": len(plan.assignments),
                 "heuristic_s": time.perf_counter() - t0, "heuristic_cpu_s": time.process_time() - c0}
        bad = problems(inst.snapshot, inst.demands, plan)
        if bad:
            raise SystemExit(f"{inst.name}: invalid plan: {bad[:3]}")
        baselines(fleet, inst.snapshot, inst.demands)
        print(f"{inst.name}: heur {plan.cost_per_hour:.2f} ({len(plan.assignments)}) in {fleet['heuristic_s']:.1f} s,"
              f" kai {fleet['kai']:.2f} ({fleet['kai_placed']})", flush=True)

    summary: dict[str, Any] = {"suite": gaps(rows)}
    for family in FAMILIES:
        summary[family] = gaps([r for r in rows if r["family"] == family])
    vs = {base: comparison(rows, base) for base in BASELINES}
    times = {"heuristic_ms_median": statistics.median(r["heuristic_ms"] for r in rows),
             "heuristic_ms_p90": pct([r["heuristic_ms"] for r in rows], 0.9),
             "exact_ms_median": statistics.median(r["exact_ms"] for r in rows),
             "heuristic_cpu_ms_median": statistics.median(r["heuristic_cpu_ms"] for r in rows),
             "no_kicks_cpu_ms_median": statistics.median(r["no_kicks_cpu_ms"] for r in rows),
             "heuristic_cpu_s_total": sum(r["heuristic_cpu_ms"] for r in rows) / 1000,
             "no_kicks_cpu_s_total": sum(r["no_kicks_cpu_ms"] for r in rows) / 1000}
    comparable = [r for r in rows if r["exact_status"] == "optimal" and r["same_unplaced"]
                  and r["no_kicks_placed"] == r["heuristic_placed"]]
    kicked_better = [r for r in rows if r["heuristic_placed"] > r["no_kicks_placed"] or (
        r["heuristic_placed"] == r["no_kicks_placed"] and r["heuristic"] < r["no_kicks"] - 1e-6)]
    kicked_worse = [r for r in rows if r["heuristic_placed"] < r["no_kicks_placed"] or (
        r["heuristic_placed"] == r["no_kicks_placed"] and r["heuristic"] > r["no_kicks"] + 1e-6)]
    kicks = {"better": [r["instance"] for r in kicked_better], "worse": [r["instance"] for r in kicked_worse],
             "no_kicks_worst_pct": max((r["no_kicks_gap_pct"] for r in comparable), default=None),
             "no_kicks_p90_pct": pct([r["no_kicks_gap_pct"] for r in comparable], 0.9)}
    a = summary["suite"]
    md = [
        f"{len(rows)} seeded instances, {args.per_family} per family ({', '.join(FAMILIES)}; see "
        "`benchmarks/placement/instances.py`). Exact = HiGHS MILP (time limit "
        f"{args.time_limit:g} s per instance). Both hold a model's min-off-spot promise and every taint as "
        "`verify.problems` checks them.",
        "",
        "| family | instances with a measurable gap | median | p90 | worst | exactly optimal | fewer replicas than "
        "the MILP |",
        "|---|---|---|---|---|---|---|",
    ]
    for family in ("suite", *FAMILIES):
        s = summary[family]
        if not s["comparable"]:
            continue
        label = "whole suite" if family == "suite" else family
        md.append(f"| {label} | {s['comparable']} of {s['instances']} | {s['median_pct']:.2f} % "
                  f"| {s['p90_pct']:.2f} % | {s['worst_pct']:.2f} % | {100 * s['optimal_share']:.0f} % "
                  f"| {len(s['fewer_than_exact'])} |")
    md += [
        "",
        "Largest gaps: " + ", ".join(f"{w['instance']} {w['gap_pct']:.2f} %" for w in a["worst"]) + ". Fewer "
        "replicas than the MILP: " + (", ".join(a["fewer_than_exact"]) or "none") + f". MILP not proven optimal: "
        f"{a['exact_not_optimal']}. Heuristic time per instance: median {times['heuristic_ms_median']:.0f} ms, p90 "
        f"{times['heuristic_ms_p90']:.0f} ms (MILP median {times['exact_ms_median']:.0f} ms).",
        "",
        f"Kicks (`core/kick.py`), the same plans without them on the same instances: worst gap "
        f"{kicks['no_kicks_worst_pct']:.2f} % without, p90 {kicks['no_kicks_p90_pct']:.2f} %; kicks made "
        f"{len(kicks['better'])} plans better ({', '.join(kicks['better'][:6]) or 'none'}"
        f"{' ...' if len(kicks['better']) > 6 else ''}) and {len(kicks['worse'])} worse. CPU time per instance: "
        f"median {times['heuristic_cpu_ms_median']:.0f} ms with kicks, {times['no_kicks_cpu_ms_median']:.0f} ms "
        f"without ({times['heuristic_cpu_ms_median'] / times['no_kicks_cpu_ms_median']:.2f}x); the whole suite "
        f"{times['heuristic_cpu_s_total']:.1f} s against {times['no_kicks_cpu_s_total']:.1f} s "
        f"({times['heuristic_cpu_s_total'] / times['no_kicks_cpu_s_total']:.2f}x).",
        "",
        "Against what users run today, same instances ($/h saved where both placed the same replicas; replicas "
        "only one of them placed):",
        "",
        "| baseline | instances with equal replicas | $/h saved: median | total | replicas only gpupool placed "
        "(instances) | replicas only the baseline placed |",
        "|---|---|---|---|---|---|",
    ]
    for base, c in vs.items():
        med = f"{c['saving_median_pct']:.1f} %" if c["saving_median_pct"] is not None else "-"
        tot = f"{c['saving_total_pct']:.1f} %" if c["saving_total_pct"] is not None else "-"
        md.append(f"| {LABELS[base]} | {c['equal_instances']} | {med} | {tot} | {c['only_gpupool_replicas']} "
                  f"({c['only_gpupool_instances']}) | {c['only_baseline_replicas']} |")
    if fleet is not None:
        md += [
            "",
            f"Fleet scale ({fleet['instance']} with every family's features: {fleet['nodes']} nodes, {fleet['gpus']} "
            f"GPUs, {fleet['models']} models, {fleet['replicas']} replicas; no MILP at this size): gpupool places "
            f"{fleet['heuristic_placed']} for ${fleet['heuristic']:.2f}/h in {fleet['heuristic_cpu_s']:.1f} s of CPU; "
            + "; ".join(f"{LABELS[b]} {fleet[f'{b}_placed']} for ${fleet[b]:.2f}/h" for b in BASELINES) + ".",
        ]
    md += ["", f"Machine load average when recorded: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}."]
    path = write("placement-quality", {"summary": summary, "baselines": vs, "times": times, "kicks": kicks,
                                       "fleet": fleet, "instances": rows}, "\n".join(md))
    print("\n".join(md))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
