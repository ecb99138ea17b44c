"""Baseline placements the solver is measured against (benchmarks, property tests).

Both give every GPU replica whole GPUs (no MIG, as a cluster without gpupool would) of a product
the model accepts, and CPU cores only to models that accept no GPU at all:

* :func:`whole_gpu_first_fit`: nodes in name order, the first with enough free GPUs wins;
* :func:`spread`: the node with the largest share of free GPUs wins, like kube-scheduler's default
  ``NodeResourcesFit`` LeastAllocated scoring.

Same cost definition as the solver: every GPU holding a replica costs its full hourly price.
:func:`first_fit_cheapest_slice` is the stronger baseline, what KAI Scheduler or Kueue with NVIDIA's
MIG manager do today: existing (or all-balanced) MIG slices, cheapest slice first, never a re-layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gpupool_operator.core.cost import PriceTier
from gpupool_operator.core.demand import Demand, Shape, ShapeKind, candidates
from gpupool_operator.core.inventory import Node, Snapshot
from gpupool_operator.core.solver import products_of
from gpupool_operator.core.state import NodeState, State
from gpupool_operator.core.taints import admission

__all__ = ["BaselineResult", "first_fit_cheapest_slice", "spread", "whole_gpu_first_fit"]


@dataclass(frozen=True, slots=True)
class BaselineResult:
    name: str
    cost_per_hour: float
    placed: int
    unplaced: int
    gpus_used: int


def whole_gpu_first_fit(snapshot: Snapshot, demands: Sequence[Demand]) -> BaselineResult:
    return _run("whole-gpu-first-fit", snapshot, demands, spread_nodes=False)


def spread(snapshot: Snapshot, demands: Sequence[Demand]) -> BaselineResult:
    return _run("k8s-spread", snapshot, demands, spread_nodes=True)


def _run(name: str, snapshot: Snapshot, demands: Sequence[Demand], spread_nodes: bool) -> BaselineResult:
    st = State.from_snapshot(snapshot, keep=None)
    products = products_of(snapshot)
    cost = sum(s.price for s in st.gpus if s.charged)
    placed = unplaced = 0
    used = sum(1 for s in st.gpus if s.charged)
    gpu_nodes = [n for n in st.nodes if n.gpus and n.spec.schedulable]
    for d in sorted(demands, key=lambda d: d.key):
        cands = candidates(d, products)[0]
        tp = max(1, d.tensor_parallel)
        accepted = sorted({c.shape.product for c in cands if c.shape.kind in (ShapeKind.GPU, ShapeKind.MIG)})
        cpu = [c for c in cands if c.shape.kind is ShapeKind.CPU]
        off_spot = 0
        for _ in range(d.replicas):
            # The same promise the solver keeps: no spot until min_off_spot replicas run off it.
            spot_ok = d.allow_spot and off_spot >= d.min_off_spot
            node = _pick(gpu_nodes, accepted, tp, spot_ok, spread_nodes, d) if accepted else None
            if node is not None:
                off_spot += node.spec.price_tier is not PriceTier.SPOT
                for j in node.free[:tp]:
                    cost += node.gpus[j].price
                node.free = node.free[tp:]
                used += tp
                placed += 1
                continue
            if not accepted and cpu:
                shape = cpu[0].shape
                admit = {t: a for t in st.taint_sets
                         if (a := admission(d.tolerations_for(ShapeKind.CPU), t)) is not None}
                target = next(st.cpu_fit(shape.cpu_millis, shape.memory_mib, spot_ok, admit), None)
                if target is not None:
                    off_spot += target.spec.price_tier is not PriceTier.SPOT
                    target.cpu_free -= shape.cpu_millis
                    target.mem_free -= shape.memory_mib
                    cost += snapshot.cpu_price * shape.cpu_millis / 1000
                    placed += 1
                    continue
            unplaced += 1
    return BaselineResult(name, round(cost, 6), placed, unplaced, used)


def _pick(nodes: list[NodeState], accepted: list[str], tp: int, spot_ok: bool, spread_nodes: bool,
          demand: Demand) -> NodeState | None:
    best: NodeState | None = None
    best_share = -1.0
    tolerations = demand.tolerations_for(ShapeKind.GPU)
    for node in nodes:
        if len(node.free) < tp or node.gpus[0].product not in accepted:
            continue
        if admission(tolerations, node.spec.taints) is None:
            continue
        if not spot_ok and node.spec.price_tier is PriceTier.SPOT:
            continue
        if not spread_nodes:
            return node
        share = len(node.free) / len(node.gpus)
        if share > best_share:
            best, best_share = node, share
    return best


def first_fit_cheapest_slice(snapshot: Snapshot, demands: Sequence[Demand], layout: str = "current") -> BaselineResult:
    """What users run today without gpupool: a KAI-Scheduler / Kueue-like scheduler that never
    changes a MIG layout and places each replica, model by model in name order, on the cheapest
    accepted slice that is free (a MIG instance at its slice share, whole GPUs, CPU cores at the
    same prices as the solver), first fit over the nodes in name order.

    ``layout="current"`` keeps every GPU as it is; ``"all-balanced"`` first lays every idle
    MIG-capable GPU out with NVIDIA's ``all-balanced`` config (2x 1g, 1x 2g, 1x 3g), the static
    partitioning NVIDIA ships, so such a cluster has no idle whole GPUs left. Taints, tolerations,
    cordons, spot (the min-off-spot promise), unusable GPUs and withheld instances are honoured as
    the solver honours them. Cost: every GPU holding one of these replicas at its full price, plus
    CPU cores (the solver's cost definition)."""
    from gpupool_operator.core import catalog, mig
    from gpupool_operator.core.cost import mig_share

    products = products_of(snapshot)
    free_whole: dict[tuple[str, int], bool] = {}
    free_inst: dict[tuple[str, int], list[tuple[str, int]]] = {}
    cpu_free: dict[str, list[int]] = {}
    nodes = sorted((n for n in snapshot.nodes if n.schedulable), key=lambda n: n.name)
    for n in nodes:
        cpu_free[n.name] = [n.cpu_millis - sum(h.cpu_millis for h in n.holdings),
                            n.memory_mib - sum(h.memory_mib for h in n.holdings)]
        busy = {i for h in n.holdings for i in h.gpus} | {h.instance[0] for h in n.holdings if h.instance}
        taken = {(h.instance[1], h.instance[2]) for h in n.holdings if h.instance}
        product = catalog.by_key(n.product) if n.product is not None else None
        for g in n.gpus:
            if g.unusable:
                continue
            placement = g.layout
            if (layout == "all-balanced" and g.index not in busy and product is not None and product.mig_capable
                    and n.mig_strategy.value == "mixed" and n.mig_ready):
                placement = mig.named_layout(product, "all-balanced")[1]
            if placement is None:
                if g.index not in busy:
                    free_whole[(n.name, g.index)] = True
            else:
                withheld = set(g.withheld) if placement == g.layout else set()
                free_inst[(n.name, g.index)] = [x for x in placement if x not in withheld and
                                                not (g.index in busy and x in taken)]
    # Nodes alike for this scheduler (product, price, spot, taints) form a class: first fit within
    # a class is a pointer that only moves forward, as capacity only shrinks.
    classes: dict[tuple[Any, ...], list[Node]] = {}
    for n in nodes:
        classes.setdefault((n.product, n.gpu_price, n.price_tier is PriceTier.SPOT, n.taints), []).append(n)
    first: dict[tuple[Any, ...], int] = {}
    used: set[tuple[str, int]] = set()
    cpu_cost = 0.0
    placed = unplaced = 0

    def room(n: Node, shape: Shape) -> tuple[int, ...] | None:
        if shape.kind is ShapeKind.CPU:
            ok = cpu_free[n.name][0] >= shape.cpu_millis and cpu_free[n.name][1] >= shape.memory_mib
            return () if ok else None
        if shape.product != n.product:
            return None
        if shape.kind is ShapeKind.GPU:
            whole = [g.index for g in n.gpus if free_whole.get((n.name, g.index))]
            return tuple(whole[:shape.gpus]) if len(whole) >= shape.gpus else None
        for g in n.gpus:
            if any(p == shape.profile for p, _ in free_inst.get((n.name, g.index), ())):
                return (g.index,)
        return None

    for d in sorted(demands, key=lambda d: d.key):
        cands = [c.shape for c in candidates(d, products)[0]]
        off_spot = 0
        for _ in range(d.replicas):
            spot_ok = d.allow_spot and off_spot >= d.min_off_spot
            best: tuple[float, str, int, Node, Shape, tuple[int, ...]] | None = None
            for key, members in classes.items():
                product, gpu_price, spot, taints = key
                if spot and not spot_ok:
                    continue
                for shape in cands:
                    if admission(d.tolerations_for(shape.kind), taints) is None:
                        continue
                    if shape.kind is ShapeKind.CPU:
                        price = snapshot.cpu_price * shape.cpu_millis / 1000
                    elif shape.product != product:
                        continue
                    elif shape.kind is ShapeKind.GPU:
                        price = gpu_price * shape.gpus
                    else:
                        price = mig_share(gpu_price, catalog.by_key(product).profile(shape.profile))
                    if best is not None and (price, members[0].name) >= (best[0], best[1]):
                        continue
                    ptr = (key, shape)
                    i = first.get(ptr, 0)
                    while i < len(members) and room(members[i], shape) is None:
                        i += 1
                    first[ptr] = i
                    if i < len(members):
                        gpus = room(members[i], shape)
                        assert gpus is not None
                        best = (price, members[0].name, i, members[i], shape, gpus)
            if best is None:
                unplaced += 1
                continue
            price, _, _, node, shape, gpus = best
            off_spot += node.price_tier is not PriceTier.SPOT
            placed += 1
            if shape.kind is ShapeKind.CPU:
                cpu_free[node.name][0] -= shape.cpu_millis
                cpu_free[node.name][1] -= shape.memory_mib
                cpu_cost += price
            elif shape.kind is ShapeKind.MIG:
                insts = free_inst[(node.name, gpus[0])]
                insts.remove(next(x for x in insts if x[0] == shape.profile))
                used.add((node.name, gpus[0]))
            else:
                for i in gpus:
                    free_whole[(node.name, i)] = False
                    used.add((node.name, i))
    price_of = {n.name: n.gpu_price for n in nodes}
    cost = cpu_cost + sum(price_of[name] for name, _ in used)
    return BaselineResult(f"first-fit-cheapest-slice({layout})", round(cost, 6), placed, unplaced, len(used))
