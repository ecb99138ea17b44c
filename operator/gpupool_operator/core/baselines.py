"""Baseline placements the solver is measured against (benchmarks, property tests).

Both give every GPU replica whole GPUs (no MIG, as a cluster without gpupool would) of a product
the model accepts, and CPU cores only to models that accept no GPU at all:

* :func:`whole_gpu_first_fit`: nodes in name order, the first with enough free GPUs wins;
* :func:`spread`: the node with the largest share of free GPUs wins, like kube-scheduler's default
  ``NodeResourcesFit`` LeastAllocated scoring.

Same cost definition as the solver: every GPU holding a replica costs its full hourly price.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gpupool_operator.core.cost import PriceTier
from gpupool_operator.core.demand import Demand, ShapeKind, candidates
from gpupool_operator.core.inventory import Snapshot
from gpupool_operator.core.solver import products_of
from gpupool_operator.core.state import NodeState, State
from gpupool_operator.core.taints import admission

__all__ = ["BaselineResult", "spread", "whole_gpu_first_fit"]


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
