"""MIG policy ``AllowList``: re-lay a node only to one of the mig-parted configs the platform allows.

Why node by node: NVIDIA's MIG manager applies the config named in a node's ``nvidia.com/mig.config``
label to the whole node (a ``devices: all`` entry re-lays every GPU), so a plan may only ever give a
node one allowed layout on all its GPUs, or leave the node as it is. The solver does it in three
steps, each exact about what the cluster will look like:

1. plan as if any layout were allowed (the relaxation shows where slices are worth having);
2. for each node that plan re-lays, commit the allowed config that keeps the most of what it placed
   there (replicas it would put in that layout, minus replicas it puts on GPUs the config would
   take away), when every GPU the config changes is idle (nothing, ours or anyone's, runs there);
3. plan again on the cluster with the committed layouts in place and no re-layout allowed at all:
   existing instances and whole GPUs only. A committed node on whose new slices nothing lands is
   left as it was.

The result's layout changes carry the config's name (``LayoutChange.config``), the value for the
node's ``nvidia.com/mig.config`` label. A purely computational module with no side-effects.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from gpupool_operator.core import catalog, mig
from gpupool_operator.core.demand import Demand, ShapeKind
from gpupool_operator.core.inventory import Gpu, MigStrategy, Node, Snapshot
from gpupool_operator.core.plan import LayoutChange, Plan

if TYPE_CHECKING:
    from gpupool_operator.core.solverbase import Options

__all__ = ["commitments", "solve"]

S = TypeVar("S")
Layout = Mapping[str, int] | None  # one GPU's layout as a config gives it: {profile: count}, None = MIG off


def solve(
    snapshot: Snapshot, demands: Sequence[Demand], options: Options,
    portfolio: Callable[[Snapshot, Sequence[Demand], Options], tuple[Plan, S]],
) -> tuple[Plan, S]:
    """Plan under ``options.allowed_layouts`` (see the module docstring); ``portfolio`` is the
    solver's own entry point, called twice."""
    from gpupool_operator.core.state import MigPolicy

    allowed = dict(options.allowed_layouts or {})
    relaxed, _ = portfolio(snapshot, demands, dataclasses.replace(options, mig_policy=MigPolicy.ANY,
                                                                 allowed_layouts=None))
    chosen = commitments(snapshot, relaxed, allowed)
    committed = _with_layouts(snapshot, chosen)
    fixed = dataclasses.replace(options, mig_policy=MigPolicy.ALLOW_LIST, allowed_layouts=None)
    plan, solver = portfolio(committed, demands, fixed)
    used = {(a.node, g) for a in plan.assignments for g in a.gpus}
    changes: list[LayoutChange] = []
    notes: list[str] = []
    for node in snapshot.nodes:
        if node.name not in chosen:
            continue
        name, layouts = chosen[node.name]
        moved = [g for g, after in zip(node.gpus, layouts, strict=True) if _counts(g.layout) != _counts(after)]
        if not any((node.name, g.index) in used for g in moved):
            continue  # nothing lands on the new layout: leave the node as it is (its GPUs are idle)
        changes += [LayoutChange(node.name, g.index, g.layout, after, config=name)
                    for g, after in zip(node.gpus, layouts, strict=True) if g in moved]
        notes.append(f"{node.name}: MIG config {name} (mig.policy AllowList)")
    # A node left as it was keeps its old layouts in the plan's own view; the committed snapshot
    # only differs on nodes listed in ``changes``, whose GPUs were idle.
    return dataclasses.replace(
        plan, layout_changes=tuple(sorted(changes, key=lambda c: (c.node, c.gpu))),
        notes=plan.notes + tuple(notes),
    ), solver


def commitments(
    snapshot: Snapshot, relaxed: Plan, allowed: Mapping[str, Layout]
) -> dict[str, tuple[str, tuple[mig.Placement | None, ...]]]:
    """For each node ``relaxed`` re-lays, the allowed config to give it (name, per-GPU placements),
    when one keeps some of what ``relaxed`` placed there and changes only idle GPUs."""
    touched = {c.node for c in relaxed.layout_changes}
    by_node: dict[str, list[tuple[int, ShapeKind, str]]] = {}
    position = {(n.name, g.index): p for n in snapshot.nodes for p, g in enumerate(n.gpus)}
    for a in relaxed.assignments:
        if a.node in touched:
            for g in a.gpus[:1] if a.shape.kind is ShapeKind.MIG else a.gpus:
                by_node.setdefault(a.node, []).append((position[(a.node, g)], a.shape.kind, a.shape.profile))
    out: dict[str, tuple[str, tuple[mig.Placement | None, ...]]] = {}
    for node in snapshot.nodes:
        if node.name not in touched or not _relayable(node):
            continue
        product = catalog.by_key(node.product or "")
        busy = {i for h in node.holdings for i in (*h.gpus, *(h.instance[:1] if h.instance else ()))}
        best: tuple[int, str, tuple[mig.Placement | None, ...]] | None = None
        for name in sorted(allowed):
            known, named = mig.named_layout(product, name)  # all-1g.10gb means 4 on an A100-40GB, 7 on an H100
            valid, placement = (True, named) if known else _placement(product, allowed[name])
            if not valid:
                continue  # not a layout of this product (e.g. all-1g.10gb on an H200)
            layouts = tuple(g.layout if _counts(g.layout) == _counts(placement) else placement for g in node.gpus)
            if any(_counts(g.layout) != _counts(after) and g.index in busy
                   for g, after in zip(node.gpus, layouts, strict=True)):
                continue  # it would re-lay a GPU something runs on
            score = _kept(by_node.get(node.name, []), layouts)
            if score > 0 and (best is None or score > best[0]):
                best = (score, name, layouts)
        if best is not None:
            out[node.name] = (best[1], best[2])
    return out


def _kept(placed: list[tuple[int, ShapeKind, str]], layouts: tuple[mig.Placement | None, ...]) -> int:
    """Replicas of the relaxed plan a node's ``layouts`` (by GPU position) still hold, minus those
    they displace."""
    score = 0
    per_gpu: dict[int, Counter[str]] = {}
    for gpu, kind, profile in placed:
        if kind is ShapeKind.MIG:
            per_gpu.setdefault(gpu, Counter())[profile] += 1
        else:
            score += 1 if layouts[gpu] is None else -1
    for gpu, want in per_gpu.items():
        have = Counter(dict(_counts(layouts[gpu]) or ()))
        kept = sum((want & have).values())
        score += kept - (sum(want.values()) - kept)
    return score


def _relayable(node: Node) -> bool:
    product = catalog.by_product_label(node.product_label) if node.product is None else catalog.by_key(node.product)
    return (product is not None and product.mig_capable and node.mig_strategy is MigStrategy.MIXED
            and node.mig_ready and node.schedulable)


def _placement(product: catalog.GpuProduct, layout: Layout) -> tuple[bool, mig.Placement | None]:
    """Whether a config's layout is valid on ``product``, and its placement there."""
    if layout is None:
        return True, None
    counts = {str(k): int(v) for k, v in layout.items() if int(v) > 0}
    if not counts:
        return True, ()
    if mig.layout_problem(product, counts) is not None:
        return False, None
    return True, mig.place(product, counts)


def _counts(layout: mig.Placement | None) -> mig.Counts | None:
    return None if layout is None else mig.placement_counts(layout)


def _with_layouts(snapshot: Snapshot, chosen: Mapping[str, tuple[str, tuple[mig.Placement | None, ...]]]) -> Snapshot:
    nodes = []
    for node in snapshot.nodes:
        if node.name in chosen:
            layouts = chosen[node.name][1]
            gpus = tuple(g if _counts(g.layout) == _counts(after) else Gpu(g.index, after, unusable=g.unusable)
                         for g, after in zip(node.gpus, layouts, strict=True))
            nodes.append(dataclasses.replace(node, gpus=gpus))
        else:
            nodes.append(node)
    return dataclasses.replace(snapshot, nodes=tuple(nodes))
