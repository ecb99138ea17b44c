"""``gpupool simulate``: replay a request trace through scaling policies on a simulated cluster.

The cluster is a cluster spec (``examples/clusters/*.yaml``, or a built-in name such as
``small-hetero``) or Node objects (``kubectl get nodes -o yaml``); the pool is an InferencePool
manifest; the trace a CSV file (format in :mod:`gpupool_operator.sim.trace`) or a generator
(``poisson:rate=5,duration=3600,seed=1``, ``diurnal:...``, ``onoff:...``). Each policy runs the
same trace through the same model of replicas and the same placement engine; the table goes to
stdout, the numbers to ``OUT/results.json`` and the timeline to ``OUT/timeline.png``.

Exit status: 0 when every policy ran, 2 on bad input (one line naming the file and the row or
field).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic import ValidationError

from gpupool_operator.adapters.inventory import snapshot_from_objects
from gpupool_operator.api.config import GPUPoolConfig
from gpupool_operator.api.inferencepool import HardwareType, InferencePool
from gpupool_operator.core import catalog
from gpupool_operator.core.cost import default_prices, prices_from_config
from gpupool_operator.core.inventory import Snapshot
from gpupool_operator.core.scaling.params import DEFAULT_PARAMS, ParamError, PolicyParams
from gpupool_operator.sim.generators import GENERATORS, from_spec
from gpupool_operator.sim.model import SimConfig
from gpupool_operator.sim.policies import DEFAULT_POLICIES, POLICIES
from gpupool_operator.sim.results import RunResult
from gpupool_operator.sim.runner import run_policies
from gpupool_operator.sim.scenario import Scenario, ScenarioError, scenario_for
from gpupool_operator.sim.trace import Trace, TraceError, parse_csv

__all__ = ["SCHEMA", "register", "run"]

SCHEMA = "gpupool.io/simulate/v1"
BUILTIN_CLUSTERS = Path(__file__).resolve().parents[1] / "local" / "clusters"
AZURE_ATTRIBUTION = (
    "Azure LLM inference trace 2023 (Azure Public Dataset), CC-BY 4.0. Patel et al., \"Splitwise: "
    "Efficient generative LLM inference using phase splitting\", ISCA 2024."
)
#: Policy parameters with a flag: (flag, PolicyParams field, help).
PARAM_FLAGS = (
    ("--tick", "tick_s", "seconds between gpupool decisions"),
    ("--stable-window", "stable_window_s", "stable window, seconds"),
    ("--panic-window", "panic_window_s", "panic window, seconds"),
    ("--panic-threshold", "panic_threshold", "panic at this multiple of ready capacity (>= 1)"),
    ("--panic-decay", "panic_decay_half_life_s", "half-life of the demand high-water mark, seconds"),
    ("--tolerance", "tolerance", "no change within this fraction of capacity"),
    ("--target-utilization", "target_utilization", "share of each replica's throughput to plan for"),
)


class InputError(Exception):
    """Bad input: the message names the file and the row or field."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simulate",
        help="replay a request trace through gpupool's scaling policy and the usual autoscalers",
        description="Replay a trace through scaling policies in a discrete-event model of the replicas, "
                    "with every mix placed by the placement engine. Nothing touches a cluster.",
    )
    p.add_argument("--cluster", required=True, metavar="CLUSTER",
                   help="cluster spec YAML, a built-in name (small-hetero, large-fleet), or Node objects")
    p.add_argument("--pools", required=True, type=Path, metavar="POOLS.yaml", help="InferencePool manifest(s)")
    p.add_argument("--trace", required=True, metavar="TRACE",
                   help=f"CSV file, or a generator: {', '.join(GENERATORS)} (e.g. poisson:rate=5,duration=3600,seed=1)")
    p.add_argument("--model", help="which model of the pool (default: the only one)")
    p.add_argument("--policy", action="append", choices=sorted(POLICIES), metavar="NAME",
                   help=f"policy to run (repeat; default: {', '.join(DEFAULT_POLICIES)}; also: "
                        f"{', '.join(sorted(set(POLICIES) - set(DEFAULT_POLICIES)))})")
    p.add_argument("--pod-start", type=float, default=30.0, metavar="S", help="seconds from asking for a replica to "
                   "it serving (default %(default)s)")
    p.add_argument("--mig-relayout", type=float, default=60.0, metavar="S",
                   help="extra seconds when a replica needs a new MIG layout (default %(default)s)")
    p.add_argument("--work", choices=("auto", "tokens", "unit"), default="auto",
                   help="per-request work: token columns when present (auto), required (tokens), or 1 each")
    p.add_argument("--start", type=float, default=0.0, metavar="S", help="skip the trace's first S seconds")
    p.add_argument("--duration", type=float, metavar="S", help="simulate only S seconds of the trace")
    for flag, field, text in PARAM_FLAGS:
        p.add_argument(flag, type=float, dest=field, metavar="X",
                       help=f"{text} (default {getattr(DEFAULT_PARAMS, field):g})")
    p.add_argument("--out", type=Path, default=Path("simulate-out"), metavar="DIR",
                   help="where results.json and timeline.png go (default %(default)s)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table", help="what stdout shows")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        params = _params(args)
        if args.pod_start < 0 or not math.isfinite(args.pod_start):
            raise InputError(f"--pod-start: must be a non-negative number of seconds, got {args.pod_start:g}")
        if args.mig_relayout < 0 or not math.isfinite(args.mig_relayout):
            raise InputError(f"--mig-relayout: must be a non-negative number of seconds, got {args.mig_relayout:g}")
        snapshot, cluster_name = load_cluster(args.cluster, args.pools)
        pool, model = _pool(args.pools, args.model)
        check_products(pool, snapshot, args.pools, cluster_name)
        trace = load_trace(args.trace, args.work, args.start, args.duration)
        config = SimConfig(pod_start_s=args.pod_start, mig_relayout_s=args.mig_relayout)
        try:
            scenario = scenario_for(pool, model, snapshot, config, params)
        except ParamError as err:
            raise InputError(f"{args.pools}: InferencePool {pool.metadata.name}: model {model}: {err}") from None
        scenario.baseline_shape()
    except (InputError, TraceError, ScenarioError) as err:
        print(f"gpupool simulate: {err}", file=sys.stderr)
        return 2
    names = args.policy or list(DEFAULT_POLICIES)
    started = time.perf_counter()
    results = _run_with_progress(scenario, trace, names)
    elapsed = time.perf_counter() - started
    document = to_json(scenario, trace, results, cluster=cluster_name, pools=str(args.pools), wall_s=elapsed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(document, indent=1) + "\n")
    if not args.no_plot:
        from gpupool_operator.cli.simulate_plot import plot_timeline

        plot_timeline(results, scenario, trace, args.out / "timeline.png")
    out: TextIO = sys.stdout
    if args.output == "json":
        json.dump(document, out, indent=1)
        out.write("\n")
    else:
        out.write(table(scenario, trace, results))
        out.write(f"\n{len(results)} policies in {elapsed:.1f} s; wrote {args.out / 'results.json'}"
                  + ("" if args.no_plot else f" and {args.out / 'timeline.png'}") + "\n")
    return 0


# ------------------------------------------------------------------------------------ input
def _params(args: argparse.Namespace) -> PolicyParams:
    changes = {field: getattr(args, field) for _, field, _ in PARAM_FLAGS if getattr(args, field, None) is not None}
    try:
        return PolicyParams(**changes).validate()
    except ParamError as err:
        flag = next((f for f, field, _ in PARAM_FLAGS if field == err.field), err.field)
        raise InputError(f"{flag}: {str(err).split(': ', 1)[1]}") from None


def _documents(path: Path) -> list[Any]:
    try:
        text = path.read_text()
    except OSError as err:
        raise InputError(f"{path}: {err.strerror or err}") from None
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None


def _objects(docs: Iterable[Any], kind: str) -> list[dict[str, Any]]:
    out = []
    for doc in docs:
        items = doc.get("items") if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") else None
        for obj in items if isinstance(items, list) else [doc]:
            if isinstance(obj, dict) and obj.get("kind") == kind:
                out.append(obj)
    return out


def load_cluster(arg: str, pools_path: Path | None = None) -> tuple[Snapshot, str]:
    """The snapshot of a cluster spec, a built-in cluster name or Node objects, and its name."""
    from gpupool_operator.local.nodes import build_nodes
    from gpupool_operator.local.spec import SpecError, parse

    builtin = BUILTIN_CLUSTERS / f"{arg}.yaml"
    path = builtin if builtin.is_file() and not Path(arg).exists() else Path(arg)
    docs = _documents(path)
    prices = default_prices()
    if pools_path is not None and pools_path.is_file():
        configs = _objects(_documents(pools_path), "GPUPoolConfig")
        if configs:
            try:
                prices = prices_from_config(GPUPoolConfig.model_validate(configs[0]))
            except ValidationError as err:
                raise InputError(f"{pools_path}: GPUPoolConfig: {err.errors()[0]['msg']}") from None
    if len(docs) == 1 and isinstance(docs[0], dict) and "pools" in docs[0]:
        try:
            spec = parse(docs[0], str(path))
        except SpecError as err:
            raise InputError(str(err)) from None
        return snapshot_from_objects(build_nodes(spec), (), prices), spec.name
    nodes = _objects(docs, "Node")
    if not nodes:
        raise InputError(f"{path}: neither a cluster spec (name, pools) nor Node objects")
    return snapshot_from_objects(nodes, (), prices), path.stem


def _pool(path: Path, model: str | None) -> tuple[InferencePool, str]:
    objs = _objects(_documents(path), "InferencePool")
    if not objs:
        raise InputError(f"{path}: no InferencePool manifest")
    pools = []
    for i, obj in enumerate(objs):
        try:
            pools.append(InferencePool.model_validate(obj))
        except ValidationError as err:
            name = (obj.get("metadata") or {}).get("name", f"document {i + 1}")
            e = err.errors()[0]
            where = ".".join(str(x) for x in e["loc"]) or "(root)"
            raise InputError(f"{path}: InferencePool {name}: {where}: {e['msg']}") from None
    found = [(p, m.name) for p in pools for m in p.spec.models if model is None or m.name == model]
    if model is not None and not found:
        names = ", ".join(m.name for p in pools for m in p.spec.models)
        raise InputError(f"{path}: --model: no model {model!r} (models: {names})")
    if len(found) > 1:
        names = ", ".join(name for _, name in found)
        raise InputError(f"{path}: several models ({names}); choose one with --model")
    return found[0]


def check_products(pool: InferencePool, snapshot: Snapshot, path: Path, cluster: str) -> None:
    """Every GPU product and MIG profile the pool names must exist in the cluster."""
    products = {n.product or n.product_label for n in snapshot.nodes if n.gpus}
    for i, model in enumerate(pool.spec.models):
        for j, option in enumerate(model.hardware):
            where = f"{path}: InferencePool {pool.metadata.name}: spec.models[{i}].hardware[{j}]"
            if option.type is HardwareType.GPU and option.gpu is not None:
                try:
                    key = catalog.lookup(option.gpu.product).key
                except KeyError:
                    key = option.gpu.product
                if key not in products:
                    raise InputError(f"{where}.gpu.product: {option.gpu.product}: no node of cluster {cluster} "
                                     f"has this product (it has {', '.join(sorted(products)) or 'no GPUs'})")
            elif option.type is HardwareType.MIG and option.mig is not None and option.mig.profile is not None:
                profile = option.mig.profile
                if not any(_has_profile(p, profile) for p in products):
                    raise InputError(f"{where}.mig.profile: {profile}: no GPU of cluster {cluster} offers this "
                                     "MIG profile")


def _has_profile(product: str, profile: str) -> bool:
    try:
        prod = catalog.by_key(product)
    except KeyError:
        return False
    return prod.mig_capable and any(p.name == profile for p in prod.mig_profiles)


def load_trace(arg: str, work: str = "auto", start: float = 0.0, duration: float | None = None) -> Trace:
    """A CSV trace or a generated one; ``start``/``duration`` cut a window."""
    kind = arg.partition(":")[0]
    if kind in GENERATORS and not Path(arg).exists():
        trace = from_spec(arg)
    else:
        path = Path(arg)
        try:
            with path.open(newline="") as f:
                attribution = AZURE_ATTRIBUTION if "azure" in path.name.lower() else None
                trace = parse_csv(f, str(path), work, attribution)
        except OSError as err:
            raise InputError(f"{path}: {err.strerror or err}") from None
        except UnicodeDecodeError as err:
            raise InputError(f"{path}: not a text file ({err.reason})") from None
    if start < 0 or (duration is not None and duration <= 0):
        raise InputError("--start must be >= 0 and --duration > 0")
    return trace.window(start, duration) if start or duration else trace


# ------------------------------------------------------------------------------------ run
def _run_with_progress(scenario: Scenario, trace: Trace, names: Sequence[str]) -> list[RunResult]:
    if not sys.stderr.isatty():
        return run_policies(scenario, trace, names, _log_progress())
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description:<18}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), transient=True) as bar:
        tasks = {n: bar.add_task(n, total=trace.duration) for n in names}

        def report(name: str, done: float, total: float) -> None:
            bar.update(tasks[name], completed=done)

        return run_policies(scenario, trace, names, report)


def _log_progress() -> Callable[[str, float, float], None]:
    """Without a terminal: one line per policy when it finishes."""
    started: dict[str, float] = {}

    def report(name: str, done: float, total: float) -> None:
        started.setdefault(name, time.perf_counter())
        if done >= total:
            print(f"  {name}: {time.perf_counter() - started[name]:.1f} s", file=sys.stderr)

    return report


# ------------------------------------------------------------------------------------ output
def to_json(scenario: Scenario, trace: Trace, results: Sequence[RunResult], cluster: str, pools: str,
            wall_s: float | None = None, timeline: bool = True) -> dict[str, Any]:
    """The ``gpupool.io/simulate/v1`` document."""
    t = scenario.targets
    return {
        "schema": SCHEMA,
        "scenario": {
            "model": scenario.model,
            "cluster": cluster,
            "pools": pools,
            "trace": {"name": trace.name, "requests": len(trace), "durationSeconds": round(trace.duration, 3),
                      "attribution": trace.attribution},
            "podStartSeconds": scenario.config.pod_start_s,
            "migRelayoutSeconds": scenario.config.mig_relayout_s,
            "objectiveSeconds": t.objective_s,
            "targets": {"minReplicas": t.min_replicas, "maxReplicas": t.max_replicas,
                        "targetQueueDepth": t.target_queue_depth, "maxBatchSize": t.max_batch_size,
                        "scaleDownWindowSeconds": t.scale_down_window_s, "scaleToZero": t.scale_to_zero,
                        "budgetUsdPerHour": t.budget_usd_per_hour},
            "params": {f.name: getattr(scenario.params, f.name) for f in scenario.params.__dataclass_fields__.values()},
            "offers": [{"shape": o.key, "inferencesPerSecond": o.throughput,
                        "withinObjective": round(scenario.capacity(o), 4), "usdPerHour": o.usd_per_hour,
                        "room": o.room} for o in scenario.offers],
            "baselineShape": scenario.baseline_shape().key,
            "rejected": list(scenario.rejected),
        },
        "wallSeconds": None if wall_s is None else round(wall_s, 2),
        "results": [r.to_dict(timeline=timeline) for r in results],
    }


def _rows(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def _secs(x: float) -> str:
    return f"{x:.2f}" if math.isfinite(x) else "inf"


def table(scenario: Scenario, trace: Trace, results: Sequence[RunResult]) -> str:
    t = scenario.targets
    objective = f"{t.objective_s:g} s" if t.objective_s is not None else "none"
    parts = [f"Model {scenario.model}: {t.min_replicas}-{t.max_replicas} replicas, objective {objective}, "
             f"pod start {scenario.config.pod_start_s:g} s; trace {trace.name}: {len(trace)} requests over "
             f"{trace.duration:.0f} s\n"]
    shapes = [[o.key, f"{o.throughput:g}" if o.throughput is not None else "-", f"{scenario.capacity(o):.3g}",
               f"{o.usd_per_hour:.3f}", str(o.room)] for o in scenario.offers]
    parts.append("\nSHAPES (requests/s per replica: profile, within the objective)\n"
                 + _rows(["SHAPE", "PROFILE", "WITHIN", "$/H", "ROOM"], shapes))
    rows = [[r.policy, f"{100 * r.within_objective:.2f}%", _secs(r.p50_s), _secs(r.p99_s), f"{r.gpu_hours:.2f}",
             f"{r.usd:.2f}", f"{r.usd_per_million:.0f}" if math.isfinite(r.usd_per_million) else "-",
             str(r.cold_starts), f"{r.scale_events_per_hour:.1f}", f"{r.time_at_max_s:.0f}"] for r in results]
    parts.append("\nRESULTS\n" + _rows(["POLICY", "WITHIN", "P50 S", "P99 S", "GPU-H", "$", "$/1M", "COLD",
                                        "EVENTS/H", "AT MAX S"], rows))
    if trace.attribution:
        parts.append(f"\nTrace: {trace.attribution}\n")
    return "".join(parts)
