"""Node and Pod objects (as the API serves them) -> the core's immutable inventory snapshot.

The one snapshot builder of the operator (:class:`SnapshotBuilder`; :func:`build_snapshot` is the
same without memory). Every node is read by
:func:`gpupool_operator.adapters.inventory.node_from_object`, the one parser of GFD labels,
allocatable, MIG layouts, prices and cordons that ``gpupool plan`` uses too. On top, this module
adds only what the operator knows that a generic reader of nodes does not: which pods are its
replicas (:mod:`~gpupool_operator.adapters.ownership`: an ownerReference to a live pool in the
pod's namespace, never labels) and which GPU and MIG instance each holds (annotations it wrote on
the pod), the layout it asked NVIDIA's MIG manager for on a node still reconfiguring
(``gpupool.io/mig-layout-target``; what allocatable withholds and what a pending change re-lays
stay marked: the replicas gated on it count as placed there, so the next cycle does not plan them
again), nodes whose last re-layout failed (left out of MIG placement for
a cool-down, then used again whatever the MIG manager's state says), nodes being deleted or not
reporting Ready, and Karpenter's capacity type as the price tier when the node has no
``gpupool.io/price-tier`` label. Prices (node overrides included) come from the GPUPoolConfig.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from gpupool_operator.adapters import inventory, names
from gpupool_operator.adapters.ownership import PoolIndex, owner_uid
from gpupool_operator.core import catalog
from gpupool_operator.core.cost import Prices, PriceTier
from gpupool_operator.core.inventory import Node, Snapshot

__all__ = ["PodView", "SnapshotBuilder", "build_snapshot", "failed_at", "pod_view", "version_token"]

Obj = Mapping[str, Any]
_CAPACITY_TYPE_LABEL = "karpenter.sh/capacity-type"


@dataclass(frozen=True, slots=True)
class PodView:
    """What the snapshot needs of one pod: where it is and what it claims there."""

    key: str  # namespace/name
    node: str | None
    demand: str | None  # the demand it says it serves, when it names an owning pool and is not ending
    owner: str | None  # the InferencePool uid its ownerReference names
    pinned: bool  # not bound: only the node the operator pinned it to says where it will be
    claim: inventory.PodClaim  # without an owner: resolved per cycle against the live pools

    def resolved(self, pools: PoolIndex) -> str | None:
        """The demand this pod serves as one of the operator's replicas, else ``None``: its owner
        is a live pool in its namespace, and the demand it names is one of that pool's."""
        if self.demand is None or self.owner is None:
            return None
        pool = pools.get(self.owner)
        return self.demand if pool is not None and self.demand.startswith(pool + "/") else None


def pod_view(pod: Obj) -> PodView | None:
    """``None`` for pods that hold nothing (finished, or neither bound nor pinned by us)."""
    meta = pod.get("metadata", {})
    status = pod.get("status", {})
    if status.get("phase") in ("Succeeded", "Failed"):
        return None
    ann = meta.get("annotations", {}) or {}
    uid = owner_uid(pod)
    bound = pod.get("spec", {}).get("nodeName")
    node = bound or (ann.get(names.ANN_NODE) if uid is not None else None)
    if not node:
        return None
    demand = str(ann[names.ANN_DEMAND]) if uid and names.ANN_DEMAND in ann and not meta.get(
        "deletionTimestamp") else None
    claim = replace(inventory.pod_claim(pod), owner=None)  # the operator moves only its own replicas
    return PodView(key=claim.pod, node=node, demand=demand, owner=uid, pinned=not bound, claim=claim)


def _ready(node: Obj) -> bool:
    conds = node.get("status", {}).get("conditions", []) or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def _with_capacity_tier(node: Obj) -> Obj:
    """The node as the inventory parser should see it: Karpenter's capacity type as the price tier
    when no ``gpupool.io/price-tier`` label says otherwise."""
    meta = node.get("metadata", {})
    labels = meta.get("labels", {}) or {}
    raw = labels.get(_CAPACITY_TYPE_LABEL)
    if inventory.PRICE_TIER_LABEL in labels or not raw:
        return node
    try:
        tier = PriceTier(str(raw).lower())
    except ValueError:
        return node
    return {**node, "metadata": {**meta, "labels": {**labels, inventory.PRICE_TIER_LABEL: tier.value}}}


def failed_at(obj: Obj) -> float | None:
    """When the node's last MIG re-layout failed or timed out (``gpupool.io/mig-failed``)."""
    failed = (obj.get("metadata", {}).get("annotations", {}) or {}).get(names.ANN_MIG_FAILED, "")
    try:
        return float(failed.split(" ", 1)[0]) if failed else None
    except ValueError:
        return None


def _recently_failed(obj: Obj, now: float, failed_cooldown_s: float) -> bool:
    at = failed_at(obj)
    return at is not None and now - at < failed_cooldown_s


def _base_node(obj: Obj, prices: Prices, recently_failed: bool) -> Node:
    """The node as placement sees it, without holdings (what its pods hold is added separately).

    New MIG replicas wait while a re-layout is under way (ours: a target; anyone's: the MIG
    manager's pending/rebooting) and for a cool-down after one failed; after that the node is used
    again even if the MIG manager still says ``failed`` (never excluded for good).
    """
    node = inventory.node_from_object(_with_capacity_tier(obj), (), prices)
    meta = obj.get("metadata", {})
    target = (meta.get("annotations", {}) or {}).get(names.ANN_MIG_LAYOUT_TARGET)
    state = (meta.get("labels", {}) or {}).get(names.LABEL_MIG_CONFIG_STATE)
    gpus = node.gpus
    warnings = list(node.warnings)
    if target and node.product is not None and gpus:
        laid_out = inventory.layouts_from_annotation(catalog.by_key(node.product), len(gpus), target, warnings)
        if laid_out is not None:  # the markings stay: allocatable still wins, a pending change still re-lays
            gpus = tuple(replace(g, layout=laid_out[g.index],
                                 withheld=tuple(i for i in g.withheld if i in (laid_out[g.index] or ())))
                         for g in gpus)
    return replace(
        node,
        gpus=gpus,
        mig_ready=not target and not recently_failed and state not in ("pending", "rebooting"),
        schedulable=node.schedulable and _ready(obj) and not meta.get("deletionTimestamp"),
        warnings=tuple(warnings),
    )


def _with_holdings(base: Node, views: list[tuple[PodView, str | None]]) -> Node:
    """``base`` with what its pods hold; each view comes with the demand it serves (ours) or None."""
    claims = [v.claim if owner is None else replace(v.claim, owner=owner) for v, owner in views
              if owner is not None or not v.pinned]  # a pinned pod that is not ours holds nothing
    if not base.schedulable:  # cordoned or gone: our replicas there still hold, but no longer count
        claims = [replace(c, owner=None) for c in claims]
    product = catalog.by_key(base.product) if base.product is not None else None
    return replace(base, holdings=inventory.assign_holdings(base.gpus, product, claims))


def version_token(obj: Obj) -> tuple[Any, ...] | None:
    """What identifies one version of an API object: kind-local name, ``resourceVersion`` and the
    deletion mark (``None`` for objects without a version: never taken as unchanged)."""
    meta = obj.get("metadata", {})
    rv = meta.get("resourceVersion")
    if rv is None:
        return None
    return (meta.get("namespace"), meta.get("name"), rv, meta.get("deletionTimestamp"))


def _node_inputs(obj: Obj) -> tuple[Any, ...]:
    """Everything of a Node object :func:`_base_node` reads (heartbeats are not)."""
    meta = obj.get("metadata", {})
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    return (meta.get("name"), meta.get("labels"), meta.get("annotations"), meta.get("deletionTimestamp"),
            spec.get("unschedulable"), spec.get("taints"), status.get("allocatable"),
            None if status.get("allocatable") else status.get("capacity"),
            tuple((c.get("type"), c.get("status")) for c in status.get("conditions") or []))


class SnapshotBuilder:
    """:func:`build_snapshot` with memory, for a loop that builds one snapshot per cycle.

    An object's name and ``resourceVersion`` (and deletion mark, which the operator sets itself)
    say whether it changed (:func:`version_token`), so a Pod or Node seen last cycle needs no
    second parse, and no old object is kept alive for the comparison; a node whose
    placement inputs are equal (a heartbeat changed) keeps its parsed form too, and a node whose
    pods hold the same as before keeps its holdings. A cycle after one pod or pool change parses
    that change, not the cluster. The result equals :func:`build_snapshot` on the same objects.

    :attr:`bases` maps every node of the last snapshot to its parsed form *without* holdings; the
    same object as in an earlier cycle means nothing about that node's capacity changed since.
    """

    def __init__(self) -> None:
        self._views: dict[tuple[Any, ...], PodView | None] = {}  # version token -> view
        self._bases: dict[str, tuple[tuple[Any, ...] | None, tuple[Any, ...], bool, Node]] = {}
        self._full: dict[str, tuple[Node, tuple[tuple[PodView, str | None], ...], Node]] = {}
        self._prices: Prices | None = None
        self.bases: dict[str, Node] = {}

    def build(self, nodes: Iterable[Obj], pods: Iterable[Obj], prices: Prices, now: float,
              failed_cooldown_s: float = 1800.0, pools: PoolIndex | None = None) -> Snapshot:
        """The snapshot; ``pools`` (uid -> ``namespace/name`` of every live pool) decides which
        pods are the operator's replicas (none without it)."""
        pools = pools or {}
        if prices != self._prices:
            self._bases, self._full, self._prices = {}, {}, prices
        views: dict[tuple[Any, ...], PodView | None] = {}
        by_node: dict[str, list[tuple[PodView, str | None]]] = {}
        old_views = self._views
        for pod in pods:
            token = version_token(pod)
            view = old_views[token] if token is not None and token in old_views else pod_view(pod)
            if token is not None:
                views[token] = view
            if view is not None and view.node:
                by_node.setdefault(view.node, []).append((view, view.resolved(pools)))
        self._views = views
        bases: dict[str, tuple[tuple[Any, ...] | None, tuple[Any, ...], bool, Node]] = {}
        full: dict[str, tuple[Node, tuple[tuple[PodView, str | None], ...], Node]] = {}
        out: list[Node] = []
        for obj in nodes:
            name = obj["metadata"]["name"]
            failed = _recently_failed(obj, now, failed_cooldown_s)
            token = version_token(obj)
            cached = self._bases.get(name)
            if cached is not None and token is not None and cached[0] == token and cached[2] == failed:
                base_entry = cached
            else:
                inputs = _node_inputs(obj)
                if cached is not None and cached[2] == failed and cached[1] == inputs:
                    base_entry = (token, inputs, failed, cached[3])
                else:
                    base_entry = (token, inputs, failed, _base_node(obj, prices, failed))
            bases[name] = base_entry
            base = base_entry[3]
            on_node = by_node.get(name, [])
            held = tuple(sorted(on_node, key=lambda v: v[0].key))
            previous = self._full.get(name)
            if previous is not None and previous[0] is base and previous[1] == held:
                node = previous[2]
            else:
                node = _with_holdings(base, on_node)
            full[name] = (base, held, node)
            out.append(node)
        self._bases, self._full = bases, full
        self.bases = {name: entry[3] for name, entry in bases.items()}
        return _snapshot(out, by_node, prices)


def _snapshot(out: list[Node], by_node: Mapping[str, list[tuple[PodView, str | None]]], prices: Prices) -> Snapshot:
    warnings: list[str] = []
    known = {n.name for n in out}
    for node_name in sorted(set(by_node) - known):
        if any(owner for _, owner in by_node[node_name]):
            warnings.append(f"replicas on {node_name}, which no longer exists: they are placed again")
    return Snapshot(nodes=tuple(out), cpu_price=prices.cpu_per_core_hour, warnings=tuple(warnings))


def build_snapshot(
    nodes: Iterable[Obj],
    pods: Iterable[Obj],
    prices: Prices,
    now: float,
    failed_cooldown_s: float = 1800.0,
    pools: PoolIndex | None = None,
) -> Snapshot:
    """The snapshot one placement cycle sees (:class:`SnapshotBuilder` without memory). ``now``
    (unix seconds) ages MIG failures; ``pools`` proves which pods are the operator's."""
    return SnapshotBuilder().build(nodes, pods, prices, now, failed_cooldown_s, pools)
