"""Placement quality: heuristic vs the exact MILP optimum and vs two baselines, on seeded instances.

Run: ``PYTHONPATH=operator:worker:proto python benchmarks/placement/bench_quality.py [--instances 240]``

For each instance: the heuristic's $/h, the exact optimum's (HiGHS, time-limited), one whole GPU
per replica placed first-fit, and a kube-scheduler-like spread. The gap is measured only where the
MILP proved optimality and both placed the same number of replicas (reported separately otherwise).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "operator"), str(Path(__file__).resolve().parent)]

from instances import instance  # noqa: E402

from benchmarks._results import write  # noqa: E402
from gpupool_operator.core.baselines import spread, whole_gpu_first_fit  # noqa: E402
from gpupool_operator.core.exact import solve_exact  # noqa: E402
from gpupool_operator.core.solver import solve  # noqa: E402
from gpupool_operator.core.verify import problems  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))] if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=240)
    ap.add_argument("--time-limit", type=float, default=20.0)
    ap.add_argument("--first-seed", type=int, default=1)
    args = ap.parse_args()
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.instances):
        inst = instance(seed)
        t0 = time.perf_counter()
        plan = solve(inst.snapshot, inst.demands)
        heur_s = time.perf_counter() - t0
        bad = problems(inst.snapshot, inst.demands, plan)
        if bad:
            raise SystemExit(f"{inst.name}: invalid plan: {bad[:3]}")
        t0 = time.perf_counter()
        exact = solve_exact(inst.snapshot, inst.demands, time_limit=args.time_limit)
        exact_s = time.perf_counter() - t0
        wanted = sum(d.replicas for d in inst.demands)
        placed = len(plan.assignments)
        exact_placed = wanted - sum(exact.unplaced.values())
        heur_unplaced = {u.demand: u.count for u in plan.unplaced}
        same = heur_unplaced == dict(exact.unplaced)
        ff = whole_gpu_first_fit(inst.snapshot, inst.demands)
        sp = spread(inst.snapshot, inst.demands)
        rows.append({
            "instance": inst.name, "mix": inst.mix, "nodes": len(inst.snapshot.nodes),
            "gpus": inst.snapshot.gpu_count, "models": len(inst.demands), "replicas": wanted,
            "heuristic": plan.cost_per_hour, "heuristic_placed": placed, "heuristic_ms": heur_s * 1000,
            "exact": exact.cost_per_hour, "exact_bound": exact.lower_bound, "exact_status": exact.status,
            "exact_placed": exact_placed, "exact_ms": exact_s * 1000, "same_unplaced": same,
            "first_fit": ff.cost_per_hour, "first_fit_placed": ff.placed,
            "spread": sp.cost_per_hour, "spread_placed": sp.placed,
        })
        print(f"{inst.name:28s} heur {plan.cost_per_hour:8.2f} ({placed}/{wanted})  exact {exact.cost_per_hour:8.2f}"
              f" ({exact_placed}, {exact.status})  ff {ff.cost_per_hour:8.2f} ({ff.placed})", flush=True)

    comparable = [r for r in rows if r["exact_status"] == "optimal" and r["same_unplaced"]]
    gaps = [100 * (r["heuristic"] - r["exact"]) / r["exact"] if r["exact"] > 0 else 0.0 for r in comparable]
    fewer = [r for r in rows if r["heuristic_placed"] < r["exact_placed"]]

    def saving(mix: str | None, base: str) -> list[float]:
        out = []
        for r in rows:
            same = r[f"{base}_placed"] == r["replicas"] == r["heuristic_placed"]
            if (mix is None or r["mix"] == mix) and same and r[base] > 0:
                out.append(100 * (1 - r["heuristic"] / r[base]))
        return out

    def total_saving(mix: str | None, base: str) -> float:
        sel = [r for r in rows if (mix is None or r["mix"] == mix)
               and r[f"{base}_placed"] == r["replicas"] == r["heuristic_placed"]]
        b = sum(r[base] for r in sel)
        return 100 * (1 - sum(r["heuristic"] for r in sel) / b) if b else float("nan")

    summary = {
        "instances": len(rows),
        "gap_comparable_instances": len(comparable),
        "gap_median_pct": statistics.median(gaps) if gaps else None,
        "gap_p90_pct": pct(gaps, 0.9),
        "gap_max_pct": max(gaps) if gaps else None,
        "gap_zero_share": sum(1 for g in gaps if g < 1e-6) / len(gaps) if gaps else None,
        "exact_not_optimal": sum(1 for r in rows if r["exact_status"] != "optimal"),
        "heuristic_placed_fewer_than_exact": len(fewer),
        "heuristic_ms_median": statistics.median(r["heuristic_ms"] for r in rows),
        "exact_ms_median": statistics.median(r["exact_ms"] for r in rows),
    }
    for mix in (None, "small", "mixed", "llm"):
        label = mix or "all"
        for base in ("first_fit", "spread"):
            s = saving(mix, base)
            summary[f"saving_vs_{base}_{label}_median_pct"] = statistics.median(s) if s else None
            summary[f"saving_vs_{base}_{label}_total_pct"] = total_saving(mix, base)
    worst = sorted(zip(gaps, (r["instance"] for r in comparable), strict=True), reverse=True)[:5]
    summary["worst_instances"] = [{"instance": name, "gap_pct": g} for g, name in worst]
    summary["fewer_than_exact_instances"] = [r["instance"] for r in fewer]
    md = [
        f"{len(rows)} seeded instances (mixes small/mixed/llm, 2-9 GPU nodes of 4-8 GPUs, CPU nodes, spot, "
        "existing MIG layouts, foreign pods). Exact = HiGHS MILP "
        f"(time limit {args.time_limit:g} s per instance). Both hold a model's min-off-spot promise as "
        "`verify.problems` checks it (a model with at least that many replicas placed has that many off "
        "spot).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| instances where the gap is measurable (MILP optimal, same replicas of each model placed) "
        f"| {len(comparable)} |",
        f"| gap to optimum: median | {summary['gap_median_pct']:.2f} % |",
        f"| gap to optimum: p90 | {summary['gap_p90_pct']:.2f} % |",
        f"| gap to optimum: worst | {summary['gap_max_pct']:.2f} % |",
        f"| heuristic exactly optimal | {100 * (summary['gap_zero_share'] or 0):.0f} % of instances |",
        f"| instances where the heuristic placed fewer replicas than the MILP | {len(fewer)} |",
        f"| MILP not proven optimal in the time limit | {summary['exact_not_optimal']} |",
        f"| heuristic time per instance, median | {summary['heuristic_ms_median']:.1f} ms |",
        f"| MILP time per instance, median | {summary['exact_ms_median']:.1f} ms |",
        "",
        "Largest gaps: " + ", ".join(f"{name} {g:.2f} %" for g, name in worst) + ". Instances where the "
        "heuristic placed fewer replicas than the MILP: " + (", ".join(r["instance"] for r in fewer) or "none")
        + ".",
        "",
        "Saving of the heuristic's $/h against the baselines (instances where all three placed every replica):",
        "",
        "| mix | vs whole-GPU first-fit (median / total) | vs k8s-like spread (median / total) |",
        "|---|---|---|",
    ]
    for mix in (None, "small", "mixed", "llm"):
        label = mix or "all"
        md.append(
            f"| {label} | {summary[f'saving_vs_first_fit_{label}_median_pct'] or float('nan'):.1f} % / "
            f"{summary[f'saving_vs_first_fit_{label}_total_pct']:.1f} % | "
            f"{summary[f'saving_vs_spread_{label}_median_pct'] or float('nan'):.1f} % / "
            f"{summary[f'saving_vs_spread_{label}_total_pct']:.1f} % |"
        )
    path = write("placement-quality", {"summary": summary, "instances": rows}, "\n".join(md))
    print("\n".join(md))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
