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
import dataclasses
import io
import json
import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import yaml
from pydantic import ValidationError
from yaml.composer import ComposerError

from gpupool_operator.adapters.inventory import InvalidField, snapshot_from_objects
from gpupool_operator.api.config import PRICE_TABLES, GPUPoolConfig, default_config
from gpupool_operator.api.inferencepool import InferencePool
from gpupool_operator.core import catalog, mig
from gpupool_operator.core.cost import Prices, default_prices, prices_from_config
from gpupool_operator.core.demand import Demand, candidates, from_pool
from gpupool_operator.core.inventory import Snapshot
from gpupool_operator.core.plan import Plan
from gpupool_operator.core.solver import Options, options_from_config, products_of, solve

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
        pools = [_pool(obj, args.pools, i) for i, obj in enumerate(_objects(args.pools, "InferencePool"))]
        prices, config = _prices(args.prices, args.pools)
        pods = list(_objects(args.pods, "Pod")) if args.pods else []
        snapshot = _snapshot(args, pods, prices)
        _check_products(pools, snapshot, args.pools)
    except InputError as err:
        print(f"gpupool plan: {err}", file=sys.stderr)
        return 2
    del pods
    demands = [d for pool in pools for d in from_pool(pool)]
    options, unusable = Options(move_penalty=args.move_penalty), tuple[str, ...]()
    if config is not None:  # migSlicePricing and mig.policy act here as they do in the operator
        options, unusable = options_from_config(config, options)
    plan = solve(snapshot, demands, options)
    if unusable:
        plan = dataclasses.replace(plan, notes=(*plan.notes, *(
            f"mig.allowedLayouts: {name} is not a well-known mig-parted config; without the MIG manager's "
            "ConfigMap its layout is unknown, so the plan never sets it" for name in unusable)))
    if args.explain:
        matches = [d for d in demands if _matches(d.key, args.explain)]
        if not matches:
            known = ", ".join(d.key for d in demands) or "none"
            print(f"gpupool plan: no model {args.explain!r}; models: {known}", file=sys.stderr)
            return 2
        for d in matches:
            out.write(explain(snapshot, d, plan))
    elif args.output == "json":
        write_json(plan.to_dict(), out)
    elif args.output == "yaml":
        yaml.dump(plan.to_dict(), out, Dumper=_DUMPER, sort_keys=False)
    else:
        out.write(table(plan))
    return 1 if args.fail_unplaced and plan.unplaced else 0


# ------------------------------------------------------------------------------------ input
#: libyaml's parser and emitter where PyYAML was built with it (the wheels are), else PyYAML's own.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_STR = "tag:yaml.org,2002:str"
_MERGE = object()  # a plain ``<<`` key: YAML's merge key


def _snapshot(args: argparse.Namespace, pods: list[dict[str, Any]], prices: Prices) -> Snapshot:
    """The snapshot, with the nodes streamed from their file: each Node object becomes the core's
    Node as soon as it is read, so a fleet's objects are never all in memory at once."""
    try:
        return snapshot_from_objects(_objects(args.nodes, "Node"), pods, prices, strict=True)
    except InvalidField as err:
        path = args.pods if err.kind == "Pod" and args.pods else args.nodes
        raise InputError(f"{path}: {_one_line(str(err))}") from None
    except (KeyError, TypeError, AttributeError) as err:  # a Node object of the wrong shape
        raise InputError(f"{args.nodes}: not Node objects as kubectl prints them ({type(err).__name__}: {err})"
                         ) from None


def _open(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except OSError as err:
        raise InputError(f"{path}: {err.strerror or err}") from None


def _documents(path: Path) -> Iterator[Any]:
    """The objects of a YAML or JSON file, one at a time: each document, and a List's ``items`` (or
    a document that is a sequence) member by member as it is read.

    JSON goes through ``json.load`` (C). YAML goes through libyaml's event parser into plain Python
    values directly, with PyYAML's own safe resolution of plain scalars (memoised: a fleet repeats
    the same labels thousands of times), anchors, aliases and merge keys; the members of a top-level
    ``items`` sequence are yielded as they complete, so peak memory is one object, not the file's
    node graph (PyYAML's loaders, even the C one, build the whole graph first and are 4x slower)."""
    with _open(path) as raw:
        # a pipe (``--nodes <(kubectl get nodes -o yaml)``, /dev/stdin) cannot rewind: read it whole
        f: BinaryIO = raw if raw.seekable() else io.BytesIO(raw.read())
        head = f.read(512).lstrip()
        f.seek(0)
        try:
            if path.suffix == ".json" or head[:1] in (b"{", b"["):
                try:
                    doc = json.load(f)
                except json.JSONDecodeError:
                    if path.suffix == ".json":
                        raise
                    f.seek(0)  # YAML flow style, e.g. {H100-80GB: 6.88}
                else:
                    yield from _flatten([doc])
                    return
            yield from _yaml_stream(f)
        except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InputError(f"{path}: not valid YAML/JSON: {_one_line(str(err))}") from None
        except _Unsupported as err:
            raise InputError(f"{path}: {err}") from None


def _flatten(docs: Iterable[Any]) -> Iterator[Any]:
    for doc in docs:
        if doc is None:
            continue
        if isinstance(doc, list):
            yield from doc
        elif isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") and "items" in doc:
            yield from doc.get("items") or ()
        else:
            yield doc


class _Unsupported(Exception):
    """YAML that is valid but not a plain API object (a collection with an explicit tag)."""


def _yaml_stream(f: BinaryIO) -> Iterator[Any]:
    loader = _LOADER(f)
    get, check = loader.get_event, loader.check_event
    anchors: dict[str, Any] = {}
    plain: dict[str, Any] = {}

    def scalar(e: Any) -> Any:
        if e.tag is None or e.tag == "!":
            if not e.implicit[0]:  # quoted, or a block scalar: a string
                return e.value
            try:
                return plain[e.value]
            except KeyError:
                tag = loader.resolve(yaml.ScalarNode, e.value, (True, False))
                value = (e.value if tag == _STR else _MERGE if tag == "tag:yaml.org,2002:merge"
                         else loader.construct_object(yaml.ScalarNode(tag, e.value)))
                plain[e.value] = value
                return value
        return loader.construct_object(yaml.ScalarNode(e.tag, e.value, style=e.style))

    def entries(out: dict[Any, Any], key: Any, item: Any) -> None:
        if key is _MERGE and isinstance(item, (dict, list)):  # a merge key: keys already there win
            for m in [item] if isinstance(item, dict) else reversed(item):
                for k, v in (m.items() if isinstance(m, dict) else ()):
                    out.setdefault(k, v)
        else:
            out["<<" if key is _MERGE else key] = item

    def value(e: Any) -> Any:
        kind = type(e)
        if kind is yaml.ScalarEvent:
            v = scalar(e)
        elif kind is yaml.MappingStartEvent:
            _plain_tag(e, "map")
            v = {}
            if e.anchor:
                anchors[e.anchor] = v
            while not check(yaml.MappingEndEvent):
                key = value(get())
                entries(v, key, value(get()))
            get()
            return v
        elif kind is yaml.SequenceStartEvent:
            _plain_tag(e, "seq")
            v = []
            if e.anchor:
                anchors[e.anchor] = v
            while not check(yaml.SequenceEndEvent):
                v.append(value(get()))
            get()
            return v
        elif kind is yaml.AliasEvent:
            if e.anchor not in anchors:
                raise ComposerError(None, None, f"found undefined alias {e.anchor!r}", e.start_mark)
            return anchors[e.anchor]
        else:
            raise ComposerError(None, None, f"unexpected {kind.__name__}", e.start_mark)
        if e.anchor:
            anchors[e.anchor] = v
        return v

    def top(e: Any) -> Iterator[Any]:
        """A top-level mapping: the members of its ``items`` sequence one by one, else itself."""
        _plain_tag(e, "map")
        out: dict[Any, Any] = {}
        streamed = False
        while not check(yaml.MappingEndEvent):
            key = value(get())
            if key == "items" and check(yaml.SequenceStartEvent):
                _plain_tag(get(), "seq")
                while not check(yaml.SequenceEndEvent):
                    yield value(get())
                get()
                streamed = True
                continue
            entries(out, key, value(get()))
        get()
        if not streamed:
            yield out

    get()  # StreamStart
    while not check(yaml.StreamEndEvent):
        get()  # DocumentStart
        anchors.clear()
        first = get()
        if type(first) is yaml.MappingStartEvent:
            yield from top(first)
        elif type(first) is yaml.SequenceStartEvent:
            _plain_tag(first, "seq")
            while not check(yaml.SequenceEndEvent):
                yield value(get())
            get()
        elif (doc := value(first)) is not None:
            yield doc
        get()  # DocumentEnd


def _plain_tag(e: Any, kind: str) -> None:
    if e.tag not in (None, "!", f"tag:yaml.org,2002:{kind}"):
        raise _Unsupported(f"line {e.start_mark.line + 1}: a {kind} tagged {e.tag} is not an API object")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _objects(path: Path, kind: str) -> Iterator[dict[str, Any]]:
    for i, obj in enumerate(_documents(path)):
        if not isinstance(obj, dict):
            raise InputError(f"{path}: object {i + 1}: expected {kind} objects, found {type(obj).__name__}")
        if obj.get("kind", kind) == kind:
            yield obj


def _load(path: Path) -> list[Any]:
    return list(_documents(path))


def _where(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _problems(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:3]:
        msg = e["msg"].removeprefix("Value error, ")
        shown = e.get("input")
        value = f"{shown!r}: " if isinstance(shown, (str, int, float)) and repr(shown) not in msg else ""
        parts.append(f"{_where(e['loc'])}: {value}{msg}")
    return _one_line("; ".join(parts))


def _pool(obj: dict[str, Any], path: Path, index: int) -> InferencePool:
    try:
        return InferencePool.model_validate(obj)
    except ValidationError as err:
        name = (obj.get("metadata") or {}).get("name", f"document {index + 1}")
        raise InputError(f"{path}: InferencePool {name}: {_problems(err)}") from None


def _check_products(pools: Sequence[InferencePool], snapshot: Snapshot, path: Path) -> None:
    """A GPU product that is neither in the catalog nor on any node is a typo, not a shortage."""
    labels = {n.product_label for n in snapshot.nodes if n.product_label} | {
        n.product for n in snapshot.nodes if n.product}
    for pool in pools:
        for mi, model in enumerate(pool.spec.models):
            for hi, option in enumerate(model.hardware):
                product = option.gpu.product if option.gpu is not None else None
                if product is None or product in labels:
                    continue
                try:
                    catalog.lookup(product)
                except KeyError:
                    known = ", ".join(p.key for p in catalog.PRODUCTS)
                    raise InputError(
                        f"{path}: InferencePool {pool.metadata.name}: spec.models[{mi}].hardware[{hi}].gpu.product: "
                        f"{product!r} is not a GPU product gpupool knows ({known}) and no node reports it in "
                        "nvidia.com/gpu.product") from None


def _prices(spec: str | None, pools_path: Path) -> tuple[Prices, GPUPoolConfig | None]:
    """The prices, and the GPUPoolConfig they came from (its MIG settings act on the plan too)."""
    if spec is None:
        configs = list(_objects(pools_path, "GPUPoolConfig"))
        if not configs:
            return default_prices(), None
        config = _config(configs[0], pools_path)
        return prices_from_config(config), config
    if spec in PRICE_TABLES:
        return prices_from_config(default_config(spec)), None
    path = Path(spec)
    docs = _load(path)
    configs = [d for d in docs if isinstance(d, dict) and d.get("kind") == "GPUPoolConfig"]
    if configs:
        config = _config(configs[0], path)
        return prices_from_config(config), config
    if len(docs) == 1 and isinstance(docs[0], dict):
        table: dict[str, float] = {}
        cpu = default_prices().cpu_per_core_hour
        for key, value in docs[0].items():
            try:
                usd = float(value)
            except (TypeError, ValueError):
                usd = math.nan
            if not math.isfinite(usd) or usd < 0:
                raise InputError(f"{path}: {key}: {value!r} is not a price: expected a non-negative number of "
                                 "US dollars per GPU-hour (per vCPU-hour for cpu), such as 3.43") from None
            if key in ("cpu", "vcpu"):
                cpu = usd
                continue
            try:
                table[catalog.lookup(str(key)).key] = usd
            except KeyError:
                table[str(key)] = usd
        return Prices(gpu=table, cpu_per_core_hour=cpu), None
    raise InputError(f"{path}: expected a GPUPoolConfig manifest or a {{product: price}} map")


def _config(obj: dict[str, Any], path: Path) -> GPUPoolConfig:
    try:
        return GPUPoolConfig.model_validate(obj)
    except ValidationError as err:
        name = (obj.get("metadata") or {}).get("name", "")
        raise InputError(f"{path}: GPUPoolConfig {name}: {_problems(err)}".replace("GPUPoolConfig :", "GPUPoolConfig:")
                         ) from None


def _matches(key: str, wanted: str) -> bool:
    return key == wanted or key.endswith("/" + wanted)


# ------------------------------------------------------------------------------------ output
def write_json(doc: dict[str, Any], out: TextIO) -> None:
    """The plan as JSON, one top-level key a line and one list member (a placement) a line: as
    readable as ``indent`` and as fast as the C encoder, which ``indent`` turns off."""
    out.write("{\n")
    for i, (key, value) in enumerate(doc.items()):
        sep = "," if i < len(doc) - 1 else ""
        if isinstance(value, list) and value:
            out.write(f"  {json.dumps(key)}: [\n")
            out.write(",\n".join(f"    {json.dumps(v)}" for v in value))
            out.write(f"\n  ]{sep}\n")
        else:
            out.write(f"  {json.dumps(key)}: {json.dumps(value)}{sep}\n")
    out.write("}\n")


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
