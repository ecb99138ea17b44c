"""``gpupool plan``: what gpupool would do with these nodes and pools, without touching a cluster.

Reads what ``kubectl get nodes -o yaml`` (or ``-o json``) prints, InferencePool manifests, and
optionally prices (a GPUPoolConfig manifest, a price table name, or a ``{product: usd}`` map) and
running pods; prints every replica's placement, MIG layout changes per node and GPU, dollars per
hour in total and per model, and the reasons for anything it could not place. ``-o json`` and
``-o yaml`` print the plan in the schema ``gpupool.io/plan/v1`` (documented in the README).

Exit status: 0 when a plan was computed (even with unplaced replicas; see ``--fail-unplaced``),
1 with ``--fail-unplaced`` when some replica could not be placed, 2 on unreadable or invalid input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic import ValidationError

from gpupool_operator.adapters.inventory import snapshot_from_objects
from gpupool_operator.api.config import PRICE_TABLES, GPUPoolConfig, default_config
from gpupool_operator.api.inferencepool import InferencePool
from gpupool_operator.core import catalog, mig
from gpupool_operator.core.cost import Prices, default_prices, prices_from_config
from gpupool_operator.core.demand import Demand, candidates, from_pool
from gpupool_operator.core.inventory import Snapshot
from gpupool_operator.core.plan import Plan
from gpupool_operator.core.solver import Options, products_of, solve

__all__ = ["register", "run"]


class InputError(Exception):
    """Bad input: the message names the file and what is wrong."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "plan",
        help="show where gpupool would place InferencePools on these nodes, and what it costs",
        description=(
            "Compute a placement plan offline: NODES is what `kubectl get nodes -o yaml` prints, "
            "POOLS holds InferencePool manifests. Nothing is applied to any cluster."
        ),
    )
    p.add_argument("--nodes", required=True, type=Path, metavar="NODES.yaml",
                   help="Node objects: a v1 List (kubectl get nodes -o yaml|json), or YAML documents")
    p.add_argument("--pools", required=True, type=Path, metavar="POOLS.yaml",
                   help="InferencePool manifests (YAML documents or a v1 List)")
    p.add_argument("--prices", metavar="PRICES",
                   help="a GPUPoolConfig manifest, a price table name "
                        f"({', '.join(PRICE_TABLES)}), or a YAML map {{product: usd-per-gpu-hour, cpu: usd}}")
    p.add_argument("--pods", type=Path, metavar="PODS.yaml",
                   help="running pods (kubectl get pods -A -o yaml): what they hold stays pinned, "
                        "and gpupool's own replicas are kept where they run")
    p.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    p.add_argument("--explain", metavar="MODEL",
                   help="explain one model's choices (name, pool/name or namespace/pool/name)")
    p.add_argument("--move-penalty", type=float, default=Options().move_penalty, metavar="USD",
                   help="USD/h a move of a running replica must save (default %(default)s)")
    p.add_argument("--fail-unplaced", action="store_true", help="exit 1 when any replica is unplaced")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out: TextIO = sys.stdout
    try:
        nodes = list(_objects(args.nodes, "Node"))
        pools = [_pool(obj, args.pools, i) for i, obj in enumerate(_objects(args.pools, "InferencePool"))]
        prices = _prices(args.prices, args.pools)
        pods = list(_objects(args.pods, "Pod")) if args.pods else []
    except InputError as err:
        print(f"gpupool plan: {err}", file=sys.stderr)
        return 2
    snapshot = snapshot_from_objects(nodes, pods, prices)
    demands = [d for pool in pools for d in from_pool(pool)]
    plan = solve(snapshot, demands, Options(move_penalty=args.move_penalty))
    if args.explain:
        matches = [d for d in demands if _matches(d.key, args.explain)]
        if not matches:
            known = ", ".join(d.key for d in demands) or "none"
            print(f"gpupool plan: no model {args.explain!r}; models: {known}", file=sys.stderr)
            return 2
        for d in matches:
            out.write(explain(snapshot, d, plan))
    elif args.output == "json":
        json.dump(plan.to_dict(), out, indent=2)
        out.write("\n")
    elif args.output == "yaml":
        yaml.safe_dump(plan.to_dict(), out, sort_keys=False)
    else:
        out.write(table(plan))
    return 1 if args.fail_unplaced and plan.unplaced else 0


# ------------------------------------------------------------------------------------ input
def _load(path: Path) -> list[Any]:
    try:
        text = path.read_text()
    except OSError as err:
        raise InputError(f"{path}: {err.strerror or err}") from None
    try:
        if path.suffix == ".json":
            return [json.loads(text)]
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not valid YAML/JSON: {err}") from None


def _objects(path: Path, kind: str) -> Iterable[dict[str, Any]]:
    for doc in _load(path):
        items = doc.get("items") if isinstance(doc, dict) and doc.get("kind", "").endswith("List") else None
        if isinstance(doc, list):
            items = doc
        for obj in items if items is not None else [doc]:
            if not isinstance(obj, dict):
                raise InputError(f"{path}: expected {kind} objects, found {type(obj).__name__}")
            if obj.get("kind", kind) == kind:
                yield obj


def _pool(obj: dict[str, Any], path: Path, index: int) -> InferencePool:
    try:
        return InferencePool.model_validate(obj)
    except ValidationError as err:
        name = (obj.get("metadata") or {}).get("name", f"document {index + 1}")
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or '(root)'}: {e['msg']}" for e in err.errors()[:5]
        )
        raise InputError(f"{path}: InferencePool {name}: {problems}") from None


def _prices(spec: str | None, pools_path: Path) -> Prices:
    if spec is None:
        configs = list(_objects(pools_path, "GPUPoolConfig"))
        return prices_from_config(_config(configs[0], pools_path)) if configs else default_prices()
    if spec in PRICE_TABLES:
        return prices_from_config(default_config(spec))
    path = Path(spec)
    docs = _load(path)
    configs = [d for d in docs if isinstance(d, dict) and d.get("kind") == "GPUPoolConfig"]
    if configs:
        return prices_from_config(_config(configs[0], path))
    if len(docs) == 1 and isinstance(docs[0], dict):
        table: dict[str, float] = {}
        cpu = default_prices().cpu_per_core_hour
        for key, value in docs[0].items():
            try:
                usd = float(value)
            except (TypeError, ValueError):
                raise InputError(f"{path}: price of {key!r} is not a number: {value!r}") from None
            if key in ("cpu", "vcpu"):
                cpu = usd
                continue
            try:
                table[catalog.lookup(str(key)).key] = usd
            except KeyError:
                table[str(key)] = usd
        return Prices(gpu=table, cpu_per_core_hour=cpu)
    raise InputError(f"{path}: expected a GPUPoolConfig manifest or a {{product: price}} map")


def _config(obj: dict[str, Any], path: Path) -> GPUPoolConfig:
    try:
        return GPUPoolConfig.model_validate(obj)
    except ValidationError as err:
        raise InputError(f"{path}: GPUPoolConfig: {err.errors()[0]['msg']}") from None


def _matches(key: str, wanted: str) -> bool:
    return key == wanted or key.endswith("/" + wanted)


# ------------------------------------------------------------------------------------ output
def _rows(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def table(plan: Plan) -> str:
    """The human-readable plan."""
    parts = [
        f"Plan: ${plan.cost_per_hour:.2f}/h for {len(plan.assignments)} replicas on {plan.gpus_used} GPUs"
        f" (unused share of those GPUs: ${plan.idle_cost_per_hour:.2f}/h)\n"
    ]
    model_rows = []
    for key, cost in sorted(plan.cost_by_demand.items()):
        mine = plan.for_demand(key)
        shapes: dict[str, int] = {}
        for a in mine:
            shapes[a.shape.describe()] = shapes.get(a.shape.describe(), 0) + 1
        missing = sum(u.count for u in plan.unplaced if u.demand == key)
        model_rows.append([
            key, f"{len(mine)}/{len(mine) + missing}", f"{cost:.2f}",
            ", ".join(f"{s} (x{n})" for s, n in sorted(shapes.items())) or "-",
        ])
    parts.append("\nMODELS\n" + _rows(["MODEL", "PLACED", "$/H", "SHAPES"], model_rows))
    rows = [
        [a.demand, str(a.replica), a.shape.describe(), a.node,
         ",".join(str(g) for g in a.gpus) + (f"@{a.start}" if a.start is not None else "") or "-",
         f"{a.cost:.2f}", "keep" if a.pod else "new"]
        for a in plan.assignments
    ]
    parts.append("\nPLACEMENTS\n" + _rows(["MODEL", "#", "SHAPE", "NODE", "GPU@SLOT", "$/H", "STATE"], rows))
    if plan.layout_changes:
        rows = [
            [c.node, str(c.gpu), mig.describe(None if c.before is None else mig.placement_counts(c.before)),
             mig.describe(None if c.after is None else mig.placement_counts(c.after))]
            for c in plan.layout_changes
        ]
        parts.append("\nMIG LAYOUT CHANGES\n" + _rows(["NODE", "GPU", "BEFORE", "AFTER"], rows))
    if plan.evictions:
        rows = [[e.pod, e.node, e.demand, e.reason] for e in plan.evictions]
        parts.append("\nSTOP\n" + _rows(["POD", "NODE", "MODEL", "WHY"], rows))
    if plan.unplaced:
        rows = [[u.demand, str(u.count), u.reason] for u in plan.unplaced]
        parts.append("\nUNPLACED\n" + _rows(["MODEL", "REPLICAS", "WHY"], rows))
    if plan.notes:
        parts.append("\nNOTES\n" + "".join(f"- {n}\n" for n in plan.notes))
    return "".join(parts)


def explain(snapshot: Snapshot, demand: Demand, plan: Plan) -> str:
    """Why one model went where it did: accepted shapes with prices, rejected ones with reasons."""
    cands, rejected = candidates(demand, products_of(snapshot))
    lines = [f"Model {demand.key}: {demand.replicas} replica(s), {demand.memory_mib} MiB accelerator memory"
             + (f", tensor parallel {demand.tensor_parallel}" if demand.tensor_parallel > 1 else "")]
    prices: dict[str, list[float]] = {}
    for node in snapshot.nodes:
        if node.gpus:
            prices.setdefault(node.product or node.product_label, []).append(node.gpu_price)
    lines.append("Accepted shapes (amortised $/h: a MIG slice pays max(compute/7, memory/8) of its GPU):")
    for c in cands:
        s = c.shape
        if s.kind.value == "cpu":
            cost = f"${snapshot.cpu_price * s.cpu_millis / 1000:.2f}"
        else:
            units = float(s.gpus) if s.kind.value == "gpu" else mig.fraction(
                catalog.by_key(s.product).profile(s.profile))
            ps = sorted(set(prices.get(s.product, [])))
            cost = " / ".join(f"${p * units:.2f}" for p in ps[:3]) or "?"
        thr = f", {c.throughput:g} inf/s" if c.throughput is not None else ""
        lines.append(f"  - {s.describe()}: {cost}{thr}")
    if rejected:
        lines.append("Rejected:")
        lines += [f"  - {r}" for r in rejected]
    mine = plan.for_demand(demand.key)
    lines.append(f"Placed {len(mine)} of {demand.replicas}, ${plan.cost_by_demand.get(demand.key, 0):.2f}/h:")
    lines += [f"  - #{a.replica} {a.shape.describe()} on {a.node} GPU {','.join(map(str, a.gpus)) or '-'}: {a.reason}"
              for a in mine]
    lines += [f"  - {u.count} unplaced: {u.reason}" for u in plan.unplaced if u.demand == demand.key]
    return "\n".join(lines) + "\n"
