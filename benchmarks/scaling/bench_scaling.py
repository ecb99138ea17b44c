"""Scaling policies on real and generated traces: gpupool against HPA, KEDA, Knative KPA, AIBrix
KPA, WVA, a static peak provisioning and a clairvoyant oracle, in ``gpupool simulate``'s model.

Run: ``PYTHONPATH=operator:worker:proto python benchmarks/scaling/bench_scaling.py [--only speed,headline,sweep]``
(under ``flock /tmp/gpupool-bench.lock`` on shared machines).

* **speed**: 1 hour of the Azure code trace through every default policy, as ``gpupool simulate``
  runs it (scenario through the placement engine, every policy, JSON and PNG), wall and CPU time;
* **headline**: the code-completion LLM pool on the Azure code trace with a 30 s pod start:
  attainment, latency, GPU-hours, dollars (and their ratio to the oracle), scale events per hour,
  with the goals checked (``scaling-headline.{json,md,png}``);
* **sweep**: pod start 5, 30, 120 and 300 s on both Azure traces and three generated ones
  (Poisson, diurnal, on/off bursts) for every policy, plus the reranker pool with and without its
  warm CPU tier (``scaling-sweep.{json,md,png}``).

Traces come from ``../shared/traces`` beside the checkout (the Azure LLM inference trace 2023,
CC-BY 4.0; attribution in every result). Throughput profiles in the pools are modelled figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

import yaml  # noqa: E402

from benchmarks._results import RESULTS, write  # noqa: E402
from gpupool_operator.api.inferencepool import InferencePool  # noqa: E402
from gpupool_operator.cli.simulate import AZURE_ATTRIBUTION, load_cluster, load_trace, to_json  # noqa: E402
from gpupool_operator.sim.model import SimConfig  # noqa: E402
from gpupool_operator.sim.policies import DEFAULT_POLICIES  # noqa: E402
from gpupool_operator.sim.results import RunResult  # noqa: E402
from gpupool_operator.sim.runner import run_policies  # noqa: E402
from gpupool_operator.sim.scenario import Scenario, scenario_for  # noqa: E402
from gpupool_operator.sim.trace import Trace  # noqa: E402

TRACES_DIR = ROOT.parent / "shared" / "traces"
POOLS = Path(__file__).resolve().parent / "pools"
LLM_POOL, LLM_MODEL = POOLS / "code-completion.yaml", "code-completion"
RERANK_POOL, RERANK_MODEL = POOLS / "reranker-cpu-tier.yaml", "reranker"
GENERATED = {
    "poisson": "poisson:rate=2.5,duration=3600,seed=1",
    "diurnal": "diurnal:rate=2.5,duration=3600,period=3600,amplitude=0.8,seed=1",
    "onoff": "onoff:on_rate=15,on=20,off=100,duration=3600,seed=1",
}
POD_STARTS = (5.0, 30.0, 120.0, 300.0)
HEADLINE_POLICIES = ("gpupool", "gpupool-headroom", "gpupool-one-shape", "static", "hpa", "keda", "kpa", "aibrix",
                     "wva", "oracle")
SWEEP_POLICIES = ("gpupool", "gpupool-headroom", "static", "hpa", "keda", "kpa", "aibrix", "wva", "oracle")
CPU_TIER_POLICIES = ("gpupool", "gpupool-gpu", "kpa", "oracle")
BASELINES = ("static", "hpa", "keda", "kpa", "aibrix", "wva")


def load_pool(path: Path) -> InferencePool:
    return InferencePool.model_validate(yaml.safe_load(path.read_text()))


def traces(work: str = "auto") -> dict[str, Trace]:
    found = {}
    for name in ("code", "conv"):
        path = TRACES_DIR / f"azure-llm-2023-{name}.csv"
        if not path.is_file():
            raise SystemExit(f"{path}: missing; the Azure traces live in ../shared/traces beside the checkout")
        found[f"azure-{name}"] = load_trace(str(path), work)
    for name, spec in GENERATED.items():
        found[name] = load_trace(spec)
    return found


def load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def fmt(r: RunResult) -> str:
    return f"{100 * r.within_objective:.2f}% / ${r.usd:.2f}"


# ------------------------------------------------------------------------------------ speed
def speed() -> dict[str, Any]:
    """What `gpupool simulate` takes for 1 hour of the Azure code trace and every default policy."""
    from gpupool_operator.cli import main

    out = Path("/tmp") / f"gpupool-bench-scaling-{os.getpid()}"
    args = ["simulate", "--cluster", "small-hetero", "--pools", str(LLM_POOL),
            "--trace", str(TRACES_DIR / "azure-llm-2023-code.csv"), "--pod-start", "30", "--out", str(out)]
    t0, c0 = time.perf_counter(), time.process_time()
    with open(os.devnull, "w") as sink:
        stdout, sys.stdout = sys.stdout, sink
        try:
            rc = main(args)
        finally:
            sys.stdout = stdout
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert rc == 0, rc
    shown = " ".join(a.replace(str(ROOT) + "/", "").replace(str(ROOT.parent) + "/", "../").replace(str(out), "OUT")
                     for a in args)
    return {"command": "gpupool " + shown, "policies": list(DEFAULT_POLICIES), "wallSeconds": round(wall, 2),
            "cpuSeconds": round(cpu, 2), "goalSeconds": 60, "loadAverage": load_average()}


# ------------------------------------------------------------------------------------ headline
def headline(snapshot: Any) -> tuple[dict[str, Any], str, Scenario, Trace, list[RunResult]]:
    trace = traces()["azure-code"]
    scenario = scenario_for(load_pool(LLM_POOL), LLM_MODEL, snapshot, SimConfig(pod_start_s=30.0))
    results = run_policies(scenario, trace, HEADLINE_POLICIES, _progress("headline"))
    by = {r.policy: r for r in results}
    oracle = by["oracle"].usd
    rows = ["| policy | within objective | p50 s | p99 s | GPU-h | $ | x oracle $ | $/1M inferences | cold starts |"
            " scale events/h | s at max |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rows.append(f"| {r.policy} | {100 * r.within_objective:.2f}% | {r.p50_s:.2f} | {_s(r.p99_s)} | "
                    f"{r.gpu_hours:.2f} | {r.usd:.2f} | {r.usd / oracle:.2f} | {r.usd_per_million:.0f} | "
                    f"{r.cold_starts} | {r.scale_events_per_hour:.1f} | {r.time_at_max_s:.0f} |")
    goals = [_goals(by, name) for name in ("gpupool", "gpupool-headroom")]
    md = (f"Model `{scenario.model}` ({LLM_POOL.relative_to(ROOT)}) on the `small-hetero` cluster, "
          f"{len(trace)} requests of the Azure LLM code trace over {trace.duration:.0f} s, pod start 30 s, "
          f"MIG re-layout 60 s, latency objective {scenario.targets.objective_s:g} s (P99), 1-12 replicas.\n\n"
          + _shapes_md(scenario) + "\n" + "\n".join(rows) + "\n\n" + "\n".join(goals)
          + f"\n\n![timeline](scaling-headline.png)\n\nTrace: {AZURE_ATTRIBUTION}\n")
    doc = to_json(scenario, trace, results, cluster="small-hetero", pools=str(LLM_POOL.relative_to(ROOT)),
                  timeline=False)
    return doc, md, scenario, trace, results


def _goals(by: dict[str, RunResult], name: str) -> str:
    r, oracle, kpa = by[name], by["oracle"], by["kpa"]
    same = [by[b] for b in BASELINES if by[b].within_objective >= r.within_objective - 1e-9]
    if same:
        listed = ", ".join(f"{b.policy} ${b.usd:.2f}" for b in same)
        verdict = "yes" if all(r.usd < b.usd for b in same) else "no"
        versus = f"cheaper than every baseline with at least its attainment ({listed}): {verdict}"
    else:
        versus = "no baseline reaches its attainment"
    return (f"- **{name}**: {100 * r.within_objective:.2f}% within the objective "
            f"({'meets' if r.within_objective >= 0.99 else 'misses'} >= 99 %), "
            f"${r.usd:.2f} = {r.usd / oracle.usd:.2f}x the oracle's ${oracle.usd:.2f} "
            f"({'meets' if r.usd <= 1.2 * oracle.usd else 'misses'} <= 1.2x); {versus}; "
            f"{r.scale_events_per_hour:.1f} scale events/h against KPA's {kpa.scale_events_per_hour:.1f} "
            f"({'meets' if r.scale_events_per_hour <= kpa.scale_events_per_hour else 'misses'} <= KPA).")


def _shapes_md(scenario: Scenario) -> str:
    rows = ["| shape | profile req/s | within objective req/s | $/h | room |", "|---|---|---|---|---|"]
    for o in scenario.offers:
        rows.append(f"| {o.key} | {o.throughput:g} | {scenario.capacity(o):.3g} | {o.usd_per_hour:.3f} | {o.room} |")
    return "\n".join(rows) + "\n"


def _s(x: float) -> str:
    return f"{x:.2f}" if x != float("inf") else "inf"


# ------------------------------------------------------------------------------------ sweep
def sweep(snapshot: Any, quick: bool) -> tuple[dict[str, Any], str, dict[str, dict[float, dict[str, RunResult]]]]:
    starts = (5.0, 300.0) if quick else POD_STARTS
    llm_pool, rerank_pool = load_pool(LLM_POOL), load_pool(RERANK_POOL)
    llm: dict[str, dict[float, dict[str, RunResult]]] = {}
    cpu: dict[str, dict[float, dict[str, RunResult]]] = {}
    llm_traces, unit_traces = traces(), traces("unit")
    for tname, trace in llm_traces.items():
        for start in starts:
            sc = scenario_for(llm_pool, LLM_MODEL, snapshot, SimConfig(pod_start_s=start))
            runs = run_policies(sc, trace, SWEEP_POLICIES, _progress(f"{tname} {start:g}s"))
            llm.setdefault(tname, {})[start] = {r.policy: r for r in runs}
    for tname, trace in unit_traces.items():
        for start in starts:
            sc = scenario_for(rerank_pool, RERANK_MODEL, snapshot, SimConfig(pod_start_s=start))
            runs = run_policies(sc, trace, CPU_TIER_POLICIES, _progress(f"cpu-tier {tname} {start:g}s"))
            cpu.setdefault(tname, {})[start] = {r.policy: r for r in runs}
    md = ["Cells: share of requests within the objective / dollars for the hour. Pod start = seconds from asking "
          "for a replica to it serving (plus 60 s when a MIG re-layout is needed).\n",
          f"## The code-completion LLM ({LLM_POOL.relative_to(ROOT)}, objective 2.5 s P99)\n"]
    md += _sweep_tables(llm, SWEEP_POLICIES, starts)
    md.append(f"\n## What a warm CPU tier buys ({RERANK_POOL.relative_to(ROOT)}, objective 1 s P95, one request = "
              "one unit of work)\n\n`gpupool` may keep a CPU replica ($0.384/h) as its warm floor and let the A100 "
              "($3.43/h) go to zero; `gpupool-gpu` has no CPU tier, so its floor is one A100.\n")
    md += _sweep_tables(cpu, CPU_TIER_POLICIES, starts)
    md.append("\n![sweep](scaling-sweep.png)\n")
    md.append(f"\nTraces: azure-code and azure-conv are the {AZURE_ATTRIBUTION} Generated: "
              + "; ".join(f"{k} `{v}`" for k, v in GENERATED.items()) + ".\n")
    doc = {"podStarts": list(starts), "llm": _sweep_json(llm), "cpuTier": _sweep_json(cpu),
           "attribution": AZURE_ATTRIBUTION, "generated": GENERATED}
    return doc, "\n".join(md), llm


def _sweep_tables(data: dict[str, dict[float, dict[str, RunResult]]], policies: tuple[str, ...],
                  starts: tuple[float, ...]) -> list[str]:
    out = []
    for tname, by_start in data.items():
        out.append(f"\n**{tname}**\n")
        out.append("| policy | " + " | ".join(f"{s:g} s" for s in starts) + " |")
        out.append("|---|" + "---|" * len(starts))
        for p in policies:
            out.append(f"| {p} | " + " | ".join(fmt(by_start[s][p]) for s in starts) + " |")
    return out


def _sweep_json(data: dict[str, dict[float, dict[str, RunResult]]]) -> dict[str, Any]:
    return {t: {f"{s:g}": {p: r.to_dict(timeline=False, decisions=0) for p, r in runs.items()}
                for s, runs in by_start.items()} for t, by_start in data.items()}


def plot_sweep(llm: dict[str, dict[float, dict[str, RunResult]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(llm)
    fig, axes = plt.subplots(2, len(names), figsize=(3.2 * len(names), 6), sharex=True)
    for col, tname in enumerate(names):
        by_start = llm[tname]
        starts = sorted(by_start)
        for p in SWEEP_POLICIES:
            style = {"linewidth": 2.2} if p.startswith("gpupool") else {"linewidth": 1, "alpha": 0.8}
            within = [100 * by_start[s][p].within_objective for s in starts]
            cost = [by_start[s][p].usd / by_start[s]["oracle"].usd for s in starts]
            axes[0][col].plot(starts, within, marker="o", markersize=3, label=p, **style)
            axes[1][col].plot(starts, cost, marker="o", markersize=3, label=p, **style)
        axes[0][col].set_title(tname, fontsize=9)
        axes[0][col].axhline(99, color="0.5", linestyle=":", linewidth=0.8)
        axes[1][col].set_xscale("log")
        axes[1][col].set_xlabel("pod start, s")
        axes[0][col].set_ylim(bottom=max(0, min(axes[0][col].get_ylim()[0], 80)))
    axes[0][0].set_ylabel("% within objective")
    axes[1][0].set_ylabel("cost / the oracle's cost")
    axes[0][-1].legend(fontsize=6, loc="lower left")
    fig.text(0.01, 0.003, f"azure-*: {AZURE_ATTRIBUTION}", fontsize=6, color="0.4")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _progress(label: str):  # type: ignore[no-untyped-def]
    started = time.perf_counter()

    def report(name: str, done: float, total: float) -> None:
        if done >= total:
            print(f"  {label}: {name} {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)

    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="speed,headline,sweep", help="comma-separated parts to run")
    ap.add_argument("--quick", action="store_true", help="sweep only 5 s and 300 s pod starts")
    args = ap.parse_args()
    parts = set(args.only.split(","))
    snapshot, _ = load_cluster("small-hetero")
    load = load_average()
    if "speed" in parts or "headline" in parts:
        data: dict[str, Any] = {}
        md = ""
        if "speed" in parts:
            data["speed"] = speed()
            s = data["speed"]
            md += (f"## Speed\n\n1 hour of the Azure code trace through the {len(s['policies'])} default policies "
                   f"({', '.join(s['policies'])}), as `{s['command']}` runs it (placement-engine scenario, every "
                   f"policy, JSON and PNG): **{s['wallSeconds']:.1f} s wall, {s['cpuSeconds']:.1f} s CPU** "
                   f"(goal < 60 s; load average {s['loadAverage']} on {os.cpu_count()} CPUs).\n\n")
        if "headline" in parts:
            doc, hmd, scenario, trace, results = headline(snapshot)
            data["headline"] = doc
            md += "## Azure code trace, 30 s pod start\n\n" + hmd
            from gpupool_operator.cli.simulate_plot import plot_timeline

            plot_timeline(results, scenario, trace, RESULTS / "scaling-headline.png",
                          title="Azure LLM code trace through every policy, pod start 30 s")
        data["loadAverage"] = load
        md += f"\nMachine load average when started (1/5/15 min): {load}.\n"
        write("scaling-headline", data, md)
    if "sweep" in parts:
        doc, smd, llm = sweep(snapshot, args.quick)
        plot_sweep(llm, RESULTS / "scaling-sweep.png")
        write("scaling-sweep", {**doc, "loadAverage": load}, smd + f"\nMachine load average when started: {load}.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
