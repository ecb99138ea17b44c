"""Node and Pod objects (plain dicts, exactly as ``kubectl get -o yaml/json`` prints them) -> Snapshot.

The only place that knows GFD label names, device-plugin resource names and the ``gpupool.io/*``
labels and annotations. Works on dicts so the same code serves the operator (kubernetes client
objects turned into dicts), ``gpupool plan`` (files) and tests. Quantities are read with the
Kubernetes client's own parser (``kubernetes.utils.parse_quantity``).

What a node offers, in order of trust:

1. **Allocatable** (``nvidia.com/gpu``, ``nvidia.com/mig-<profile>``): what the device plugin
   really offers. Where the labels say otherwise, allocatable wins and the disagreement is recorded
   in ``Node.capacity_conflicts`` (the operator turns each into a Warning event on the node).
2. **Per-GPU layouts**, which real clusters do not publish: the ``gpupool.io/mig-layout``
   annotation (one ``{profile: count}`` map per GPU index, ``{}`` = MIG disabled), else a
   well-known ``nvidia.com/mig.config`` name (``all-disabled``, ``all-enabled``, ``all-<profile>``,
   ``all-balanced``) when its totals are what allocatable offers, else the allocatable MIG
   resources spread over the GPUs deterministically (largest first, lowest GPU index first).
   Bound pods are assigned to GPUs the same way.
3. **A pending MIG change** (``nvidia.com/mig.config.state`` pending or rebooting, or a well-known
   ``nvidia.com/mig.config`` whose layout differs from what allocatable offers): every GPU the
   change will re-lay offers nothing new (all of them when the target is not known).

Instance memory is the ``nvidia.com/mig-<profile>.memory`` label when present, else the catalog's
real figure, scaled down when ``nvidia.com/gpu.memory`` reports less than the catalog's GPU.
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from kubernetes.utils import parse_quantity as _k8s_quantity

from gpupool_operator.adapters import names
from gpupool_operator.api.types import mig_resource_name
from gpupool_operator.core import catalog, mig
from gpupool_operator.core.catalog import MIG_RESOURCE_PREFIX
from gpupool_operator.core.cost import Prices, PriceTier, default_prices
from gpupool_operator.core.inventory import Gpu, Holding, MigStrategy, Node, Snapshot
from gpupool_operator.core.mig import Placement
from gpupool_operator.core.taints import Taint

__all__ = [
    "GPU",
    "MIG_LAYOUT_ANNOTATION",
    "MIG_PREFIX",
    "PRICE_ANNOTATION",
    "PRICE_TIER_LABEL",
    "InvalidField",
    "PodClaim",
    "assign_holdings",
    "layouts_from_annotation",
    "node_from_object",
    "parse_cpu",
    "parse_memory_mib",
    "pod_claim",
    "pod_requests",
    "profile_from_resource",
    "quantity",
    "snapshot_from_objects",
]

MIG_LAYOUT_ANNOTATION = "gpupool.io/mig-layout"
PRICE_TIER_LABEL = "gpupool.io/price-tier"
PRICE_ANNOTATION = "gpupool.io/price-per-gpu-hour"
#: The labels naming a pod's InferencePool and model are the operator's own (``names.LABEL_POOL``,
#: ``names.LABEL_MODEL``), and so is the annotation with the GPU indices a pod runs on
#: (``names.ANN_GPUS``: the operator's comma-separated ``0,1``, or a JSON list): one spelling, defined once.

GPU = "nvidia.com/gpu"
MIG_PREFIX = MIG_RESOURCE_PREFIX
MIG_CONFIG_LABEL = "nvidia.com/mig.config"
MIG_STATE_LABEL = "nvidia.com/mig.config.state"
_CHANGING_STATES = ("pending", "rebooting")
_UNSCHEDULABLE_TAINTS = ("node.kubernetes.io/unschedulable", "node.kubernetes.io/not-ready",
                         "node.kubernetes.io/unreachable")
_TERMINAL = ("Succeeded", "Failed")

Obj = Mapping[str, Any]


class InvalidField(ValueError):
    """A field of an API object holds a value that cannot be what the field says.

    ``kind``/``name`` name the object and ``field`` the path (``status.allocatable.cpu``), so a
    caller reading files can say exactly where the input is wrong.
    """

    def __init__(self, kind: str, name: str, field: str, value: object, expected: str) -> None:
        self.kind, self.name, self.field, self.value, self.expected = kind, name, field, value, expected
        super().__init__(f"{kind} {name}: {field}: {value!r} is not {expected}")


def snapshot_from_objects(
    nodes: Iterable[Obj], pods: Iterable[Obj] = (), prices: Prices | None = None, strict: bool = False
) -> Snapshot:
    """Build the core's inventory snapshot from Node and Pod objects.

    ``strict`` (files given to ``gpupool plan``): a malformed price annotation raises
    :class:`InvalidField` instead of becoming a warning. A malformed quantity raises either way.
    """
    prices = prices or default_prices()
    by_node: dict[str, list[Obj]] = {}
    for pod in pods:
        node_name = (pod.get("spec") or {}).get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        if node_name and phase not in _TERMINAL:
            by_node.setdefault(node_name, []).append(pod)
    built: list[Node] = []
    warnings: list[str] = []
    seen: set[str] = set()
    for obj in nodes:
        name = str((obj.get("metadata") or {}).get("name") or "")
        if not name:
            warnings.append("skipped a Node object without metadata.name")
            continue
        if name in seen:
            warnings.append(f"skipped duplicate node {name}")
            continue
        seen.add(name)
        built.append(node_from_object(obj, by_node.get(name, []), prices, strict=strict))
    return Snapshot(tuple(built), cpu_price=prices.cpu_per_core_hour, warnings=tuple(warnings))


def node_from_object(obj: Obj, pods: Iterable[Obj] = (), prices: Prices | None = None, strict: bool = False) -> Node:
    """One Node object (and the pods bound to it) as the core sees it."""
    prices = prices or default_prices()
    meta = obj.get("metadata") or {}
    name = str(meta["name"])
    labels: dict[str, str] = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    annotations: dict[str, str] = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    where = "status.allocatable" if status.get("allocatable") else "status.capacity"
    raw_alloc = status.get("allocatable") or status.get("capacity") or {}
    alloc: dict[str, str] = {str(k): str(v) for k, v in raw_alloc.items()}
    warnings: list[str] = []

    taints = _taints(spec, name)
    schedulable = not spec.get("unschedulable", False)
    if any(t.key in _UNSCHEDULABLE_TAINTS and t.hard for t in taints):
        schedulable = False
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") != "True":
            schedulable = False
            warnings.append("not Ready: no new replicas go here")

    cpu = parse_cpu(alloc.get("cpu", "0"), _Where("Node", name, f"{where}.cpu"))
    memory = parse_memory_mib(alloc.get("memory", "0"), _Where("Node", name, f"{where}.memory"))
    tier = _tier(labels.get(PRICE_TIER_LABEL), warnings)
    override = prices.node_override(labels)
    if override is not None and override.tier is not None:
        tier = override.tier

    product_label = labels.get("nvidia.com/gpu.product", "")
    strategy = _strategy(labels.get("nvidia.com/mig.strategy"))
    whole_alloc = _count(alloc.get(GPU), _Where("Node", name, f"{where}.{GPU}"))
    mig_alloc = {k[len(MIG_PREFIX):]: n for k, v in alloc.items() if k.startswith(MIG_PREFIX)
                 if (n := _count(v, _Where("Node", name, f"{where}.{k}"))) > 0}
    gpu_count = quantity(labels.get("nvidia.com/gpu.count"))
    if not product_label and not whole_alloc and not mig_alloc:
        return Node(name=name, cpu_millis=cpu, memory_mib=memory, price_tier=tier,
                    holdings=_holdings(pods, None, ()), schedulable=schedulable, warnings=tuple(warnings),
                    taints=taints)

    product = catalog.by_product_label(product_label) if product_label else None
    if strategy is MigStrategy.SINGLE and "-MIG-" in product_label and gpu_count:
        # Under `single` GFD reports slices: gpu.count counts slices, not GPUs.
        per_gpu = _single_profile_count(product, product_label)
        gpu_count = max(1, math.ceil(gpu_count / per_gpu)) if per_gpu else gpu_count
    if not gpu_count:
        gpu_count = whole_alloc + (math.ceil(sum(mig_alloc.values()) / 7) if mig_alloc else 0)
    labelled_memory = quantity(labels.get("nvidia.com/gpu.memory"))
    gpu_memory = labelled_memory or (product.memory_mib if product else 0)
    if product is None:
        warnings.append(
            f"unknown GPU product {product_label or '(no nvidia.com/gpu.product label)'}: used as "
            f"{gpu_count} whole non-MIG GPU(s) of {gpu_memory} MiB"
        )
        if strategy is MigStrategy.SINGLE:
            gpu_memory = labelled_memory
    conflicts: list[str] = []
    offered = _Offered(whole_alloc, mig_alloc, any(k == GPU or k.startswith(MIG_PREFIX) for k in alloc))
    layouts, target = _layouts(product, gpu_count, annotations, labels, strategy, offered, warnings, conflicts)
    gpu_count = len(layouts)
    mig_state = labels.get(MIG_STATE_LABEL, "success")
    changing = _changing(layouts, target, mig_state)
    mig_ready = mig_state == "success" and not any(changing)
    if mig_state != "success":
        warnings.append(f"MIG manager state {mig_state}: its MIG GPUs take no new replicas")
    elif not mig_ready:
        warnings.append(f"{MIG_CONFIG_LABEL}={labels.get(MIG_CONFIG_LABEL)} is not what allocatable offers yet: "
                        "the GPUs it re-lays take no new replicas")
    gpus = _offer(product, layouts, changing, labels.get(MIG_CONFIG_LABEL, ""), strategy, offered, conflicts)
    key = product.key if product else None
    if strategy is MigStrategy.SINGLE and product is not None:
        gpu_memory = product.memory_mib  # the label reports one slice under `single`
    price = _price(prices, key, tier, gpu_memory, annotations, override, warnings, name, strict)
    return Node(
        name=name,
        cpu_millis=cpu,
        memory_mib=memory,
        product=key,
        product_label=product_label.split("-MIG-", 1)[0] if product_label else "",
        gpu_memory_mib=gpu_memory,
        gpus=gpus,
        mig_strategy=strategy,
        mig_ready=mig_ready,
        price_tier=tier,
        gpu_price=price,
        holdings=_holdings(pods, product, gpus),
        schedulable=schedulable,
        warnings=tuple(warnings),
        mig_memory=_mig_memory(product, labels, labelled_memory if strategy is not MigStrategy.SINGLE else 0),
        taints=taints,
        capacity_conflicts=tuple(conflicts),
    )


def _taints(spec: Obj, node: str) -> tuple[Taint, ...]:
    out = []
    for i, raw in enumerate(spec.get("taints") or []):
        if not isinstance(raw, Mapping) or not raw.get("key") or not raw.get("effect"):
            raise InvalidField("Node", node, f"spec.taints[{i}]", raw, "a taint with a key and an effect")
        out.append(Taint(str(raw["key"]), str(raw["effect"]), str(raw.get("value") or "")))
    return tuple(sorted(out))


def _mig_memory(product: catalog.GpuProduct | None, labels: Mapping[str, str], gpu_memory: int
                ) -> tuple[tuple[str, int], ...]:
    """Usable MiB per MIG profile where it differs from the catalog: the node's
    ``nvidia.com/mig-<profile>.memory`` label, else the catalog's figure scaled to a GPU that
    reports less memory (``nvidia.com/gpu.memory``) than the catalog's."""
    if product is None or not product.mig_capable:
        return ()
    out: dict[str, int] = {}
    for label, value in labels.items():
        if label.startswith(MIG_PREFIX) and label.endswith(".memory"):
            prof = product.profile_for_resource(label[len(MIG_PREFIX):-len(".memory")])
            mib = quantity(value)
            if prof is not None and mib > 0:
                out[prof.name] = mib
    if 0 < gpu_memory < product.memory_mib:
        for prof in product.mig_profiles:
            out.setdefault(prof.name, prof.memory_mib * gpu_memory // product.memory_mib)
    return tuple(sorted(out.items()))


# ------------------------------------------------------------------------------------ layouts
@dataclass(frozen=True, slots=True)
class _Offered:
    """What the node's allocatable offers: whole GPUs, MIG instances per resource suffix."""

    whole: int
    mig: Mapping[str, int]
    listed: bool  # allocatable names any nvidia.com/gpu or nvidia.com/mig-* resource at all


def _layouts(
    product: catalog.GpuProduct | None, count: int, annotations: Mapping[str, str], labels: Mapping[str, str],
    strategy: MigStrategy, offered: _Offered, warnings: list[str], conflicts: list[str],
) -> tuple[list[Placement | None], list[Placement | None] | None]:
    """(the GPUs' current layouts, the layouts a pending change gives them, ``None`` when unknown:
    a custom config the MIG manager is still applying may re-lay any GPU).

    Current layouts come from the annotation, else a well-known config name whose totals are what
    allocatable offers, else allocatable itself; where allocatable offers more than the layouts
    hold, allocatable wins (a shortfall is marked later, by :func:`_offer`)."""
    if product is None or not product.mig_capable:
        return [None] * count, [None] * count
    config = labels.get(MIG_CONFIG_LABEL, "")
    settled = labels.get(MIG_STATE_LABEL, "success") == "success"
    known, named = _named_layout(product, config)
    target: list[Placement | None] | None = [named] * count if known else None
    current: list[Placement | None] | None = None
    raw = annotations.get(MIG_LAYOUT_ANNOTATION)
    if raw:
        current = layouts_from_annotation(product, count, raw, warnings)
    if current is None and strategy is MigStrategy.SINGLE:
        prof = _single_profile(labels.get("nvidia.com/gpu.product", ""))
        current = [_full(product, prof)] * count if prof is not None else [None] * count
    if current is None and known and (not offered.listed or _covers([named] * count, product, offered, exact=True)):
        current = [named] * count
    if current is not None and (strategy is MigStrategy.SINGLE or not offered.listed
                                or _covers(current, product, offered, exact=False)):
        return current, target if known else (current if settled else None)
    described = current if current is not None else ([named] * count if known else None)
    spread = _spread(product, count, offered.whole, offered.mig, warnings)
    if described is not None and settled:
        what = f"{MIG_CONFIG_LABEL}={config}" if current is None else f"the {MIG_LAYOUT_ANNOTATION} annotation"
        conflicts.append(f"{what} describes {_describe_totals(_totals(product, described))} and "
                         f"{sum(1 for x in described if x is None)} whole GPU(s), allocatable offers "
                         f"{_describe_totals(_alloc_totals(product, offered))} and {offered.whole}; allocatable wins")
    return spread, target if known else (spread if settled else None)


def _covers(layouts: list[Placement | None], product: catalog.GpuProduct, offered: _Offered, exact: bool) -> bool:
    """Whether ``layouts`` hold at least (``exact``: exactly) what allocatable offers."""
    have, offer = _totals(product, layouts), _alloc_totals(product, offered)
    whole = sum(1 for x in layouts if x is None)
    if exact:
        return have == offer and whole == offered.whole
    return whole >= offered.whole and all(have.get(p, 0) >= n for p, n in offer.items())


def _changing(layouts: list[Placement | None], target: list[Placement | None] | None, state: str) -> list[bool]:
    """Which GPUs a pending MIG change re-lays: where the target differs from the current layout
    (every GPU when the change is under way and its target unknown)."""
    if target is None:
        return [state in _CHANGING_STATES] * len(layouts)
    return [_counts(a) != _counts(b) for a, b in zip(layouts, target + [None] * len(layouts), strict=False)]


def _offer(
    product: catalog.GpuProduct | None, layouts: list[Placement | None], changing: list[bool], config: str,
    strategy: MigStrategy, offered: _Offered, conflicts: list[str],
) -> tuple[Gpu, ...]:
    """The GPUs with what allocatable does not offer marked: GPUs and instances beyond it, GPUs a
    pending change re-lays. Allocatable wins; each shortfall is one capacity conflict."""
    unusable = ["a pending MIG change (nvidia.com/mig.config=" + config + ") re-lays it" if c else "" for c in changing]
    withheld: list[list[tuple[str, int]]] = [[] for _ in layouts]
    if not offered.listed and layouts:
        conflicts.append("allocatable offers none of its GPUs (no nvidia.com/gpu or nvidia.com/mig-* resource); "
                         "they take no new replicas")
        unusable = [u or "the device plugin offers it to no pod" for u in unusable]
    elif strategy is not MigStrategy.SINGLE:
        whole = [i for i, lay in enumerate(layouts) if lay is None]
        if len(whole) > offered.whole:
            short = whole[offered.whole:]
            conflicts.append(f"the labels describe {len(whole)} whole GPU(s), allocatable {GPU} offers "
                             f"{offered.whole}; GPUs {', '.join(map(str, short))} take no new replicas")
            for i in short:
                unusable[i] = unusable[i] or f"allocatable {GPU} does not cover it"
        if product is not None:
            have = _totals(product, layouts)
            for prof, n in sorted(have.items()):
                extra = n - offered.mig.get(mig_resource_name(prof)[len(MIG_PREFIX):], 0)
                if extra <= 0:
                    continue
                conflicts.append(f"the layouts hold {n} x {prof}, allocatable offers {n - extra}; "
                                 f"{extra} take no new replicas")
                for i in reversed(range(len(layouts))):
                    for inst in reversed(layouts[i] or ()):
                        if extra and inst[0] == prof:
                            withheld[i].append(inst)
                            extra -= 1
    return tuple(Gpu(i, layouts[i], unusable=unusable[i], withheld=tuple(sorted(withheld[i])))
                 for i in range(len(layouts)))


def _totals(product: catalog.GpuProduct, layouts: Iterable[Placement | None]) -> Counter[str]:
    out: Counter[str] = Counter()
    for lay in layouts:
        out.update(name for name, _ in lay or ())
    return out


def _alloc_totals(product: catalog.GpuProduct, offered: _Offered) -> Counter[str]:
    out: Counter[str] = Counter()
    for res, n in offered.mig.items():
        prof = product.profile_for_resource(res)
        out[prof.name if prof is not None else res] += n
    return out


def _describe_totals(totals: Mapping[str, int]) -> str:
    return mig.describe(mig.counts_key(dict(totals))) if totals else "no MIG instances"


def _counts(layout: Placement | None) -> mig.Counts | None:
    return None if layout is None else mig.placement_counts(layout)


def layouts_from_annotation(
    product: catalog.GpuProduct, count: int, raw: str, warnings: list[str]
) -> list[Placement | None] | None:
    """Per-GPU layouts from a ``[{profile: count}, ...]`` annotation value (missing GPUs: MIG
    disabled); ``None`` (and a warning) when it is malformed or names an invalid layout."""
    try:
        data = json.loads(raw)
        if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
            raise ValueError("not a list of {profile: count} maps")
    except ValueError as err:
        warnings.append(f"ignored {MIG_LAYOUT_ANNOTATION} annotation: {err}")
        return None
    out: list[Placement | None] = []
    for i in range(count):
        counts = {str(k): int(v) for k, v in (data[i] if i < len(data) else {}).items() if int(v) > 0}
        if not counts:
            out.append(None)
            continue
        problem = _layout_problem(product, counts)
        if problem is not None:
            warnings.append(f"GPU {i}: ignored invalid layout {counts} in {MIG_LAYOUT_ANNOTATION}: {problem}")
            return None
        out.append(_place(product, counts))
    return out


@functools.lru_cache(maxsize=1024)
def _named_layout(product: catalog.GpuProduct, config: str) -> tuple[bool, Placement | None]:
    """A well-known mig-parted config name's layout (:func:`gpupool_operator.core.mig.named_layout`), cached."""
    return mig.named_layout(product, config)


@functools.lru_cache(maxsize=4096)
def _cached_place(product_key: str, counts: tuple[tuple[str, int], ...]) -> Placement | None:
    return mig.place(catalog.by_key(product_key), dict(counts))


@functools.lru_cache(maxsize=4096)
def _cached_problem(product_key: str, counts: tuple[tuple[str, int], ...]) -> str | None:
    return mig.layout_problem(catalog.by_key(product_key), dict(counts))


def _layout_problem(product: catalog.GpuProduct, counts: Mapping[str, int]) -> str | None:
    """Why a layout is invalid (``None``: valid); cached like :func:`_place`."""
    return _cached_problem(product.key, tuple(sorted(counts.items())))


def _place(product: catalog.GpuProduct, counts: Mapping[str, int]) -> Placement | None:
    """Start slots for a layout; cached: a fleet has few distinct layouts and placing backtracks."""
    return _cached_place(product.key, tuple(sorted(counts.items())))


def _full(product: catalog.GpuProduct, profile: str) -> Placement | None:
    n = mig.room_for(product.key, (), profile)
    return _place(product, {profile: n}) if n else None


def _spread(
    product: catalog.GpuProduct, count: int, whole: int, mig_alloc: Mapping[str, int], warnings: list[str]
) -> list[Placement | None]:
    """Distribute allocatable MIG instances over the node's MIG GPUs, largest first, lowest GPU
    first (the last ``whole`` GPUs stay whole); more GPUs than ``count`` when they need them."""
    todo: list[str] = []
    for res, n in sorted(mig_alloc.items()):
        prof = product.profile_for_resource(res)
        if prof is None:
            warnings.append(f"unknown MIG resource {MIG_PREFIX}{res} for {product.key}: ignored")
            continue
        todo += [prof.name] * n
    todo.sort(key=lambda p: (-product.profile(p).memory_slots, -product.profile(p).compute_slices, p))
    content: list[dict[str, int]] = [{} for _ in range(max(0, count - whole))]
    for prof_name in todo:
        for c in content:
            if mig.add(product.key, mig.counts_key(c), prof_name) is not None:
                c[prof_name] = c.get(prof_name, 0) + 1
                break
        else:
            content.append({prof_name: 1})
    out: list[Placement | None] = [_place(product, c) if c else () for c in content]
    return out + [None] * whole


def profile_from_resource(product: catalog.GpuProduct, res: str) -> str | None:
    """The MIG profile behind a resource suffix (``1g.10gb.me`` -> ``1g.10gb+me``), if ``product`` has it."""
    prof = product.profile_for_resource(res)
    return prof.name if prof is not None else None


def _single_profile(label: str) -> str | None:
    return label.split("-MIG-", 1)[1] if "-MIG-" in label else None


def _single_profile_count(product: catalog.GpuProduct | None, label: str) -> int:
    prof = _single_profile(label)
    if product is None or prof is None:
        return 0
    try:
        product.profile(prof)
    except KeyError:
        return 0
    return mig.room_for(product.key, (), prof)


# ------------------------------------------------------------------------------------ pods
@dataclass(frozen=True, slots=True)
class PodClaim:
    """What one pod takes on its node, as far as its object says: the input of :func:`assign_holdings`."""

    pod: str  # namespace/name
    owner: str | None  # the demand it serves (``None``: not a replica the placement may move)
    gpus: int = 0  # whole GPUs (``nvidia.com/gpu``)
    gpu_indices: tuple[int, ...] = ()  # the GPUs it says it runs on (``gpupool.io/gpus``)
    mig: str | None = None  # the MIG resource it requests (``1g.10gb``, ``1g.10gb.me``)
    instance: tuple[int, str, int] | None = None  # the MIG instance it says it holds (gpu, profile, start)
    cpu_millis: int = 0
    memory_mib: int = 0


def pod_claim(pod: Obj) -> PodClaim:
    """A pod's claim. The owner is the ``gpupool.io/demand`` of the operator's replicas, else the
    ``gpupool.io/inferencepool`` and ``gpupool.io/model`` labels (``names.LABEL_POOL`` and
    ``names.LABEL_MODEL``, the ones the operator writes); indices and the MIG instance come from the
    annotations the operator writes (``gpupool.io/gpus``, ``gpupool.io/mig-instance``)."""
    meta = pod["metadata"]
    ns = str(meta.get("namespace") or "default")
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    owner = None
    demand = annotations.get(names.ANN_DEMAND)
    if labels.get(names.LABEL_MANAGED_BY) == names.MANAGED_BY and demand:  # the operator's replicas
        owner = str(demand)
    elif names.LABEL_POOL in labels and names.LABEL_MODEL in labels:
        owner = f"{ns}/{labels[names.LABEL_POOL]}/{labels[names.LABEL_MODEL]}"
    req = pod_requests(pod)
    mig_res = next((k[len(MIG_PREFIX):] for k in sorted(req) if k.startswith(MIG_PREFIX) and int(req[k]) > 0), None)
    instance = None
    raw = str(annotations.get(names.ANN_MIG_INSTANCE) or "")
    parts = raw.split(":")
    if len(parts) == 3 and parts[0].isdigit() and parts[2].isdigit():
        instance = (int(parts[0]), parts[1], int(parts[2]))
    return PodClaim(
        pod=f"{ns}/{meta['name']}",
        owner=owner,
        gpus=int(req.get(GPU, "0")),
        gpu_indices=tuple(_annotated_gpus(meta)),
        mig=mig_res,
        instance=instance,
        cpu_millis=parse_cpu(req.get("cpu", "0")),
        memory_mib=parse_memory_mib(req.get("memory", "0")),
    )


def assign_holdings(gpus: tuple[Gpu, ...], product: catalog.GpuProduct | None,
                    claims: Iterable[PodClaim]) -> tuple[Holding, ...]:
    """What each claim holds on a node with ``gpus``: the one rule ``gpupool plan`` and the operator use.

    Claims with an owner go first (the operator knows where its replicas run), then by pod name.
    A MIG claim takes the instance it names when that is free, else the first free instance of
    its profile on the GPU it names, else on any GPU; a whole-GPU claim takes the GPUs it names
    that are free, then the first free GPUs without MIG. Real clusters do not say which physical
    GPU a pod's device is, so pods that name nothing are placed deterministically (lowest first).
    """
    layouts = {g.index: g.layout for g in gpus}
    instances = [(i, name, start) for i in sorted(layouts) for name, start in layouts[i] or ()]
    used: set[int] = set()
    taken: set[tuple[int, str, int]] = set()
    out: list[Holding] = []
    for c in sorted(claims, key=lambda c: (c.owner is None, c.pod)):
        held: tuple[int, ...] = ()
        instance: tuple[int, str, int] | None = None
        if c.mig is not None:
            profile = profile_from_resource(product, c.mig) if product is not None else None
            free = [x for x in instances if x[1] == profile and x not in taken]
            want = c.instance
            if want is not None and profile is not None and (want[0], profile, want[2]) in free:
                instance = (want[0], profile, want[2])
            else:
                same_gpu = [x for x in free if want is None or x[0] == want[0]]
                pick = same_gpu or free
                instance = pick[0] if pick else None
            if instance is not None:
                taken.add(instance)
        elif c.gpus:
            named = [i for i in dict.fromkeys(c.gpu_indices) if i in layouts and i not in used]
            if len(named) != c.gpus:
                rest = [i for i in sorted(layouts) if layouts[i] is None and i not in used and i not in named]
                named = (named + rest)[: c.gpus]
            used.update(named)
            held = tuple(named)
        out.append(Holding(pod=c.pod, owner=c.owner, gpus=held, instance=instance, cpu_millis=c.cpu_millis,
                           memory_mib=c.memory_mib))
    return tuple(out)


def _holdings(pods: Iterable[Obj], product: catalog.GpuProduct | None, gpus: tuple[Gpu, ...]) -> tuple[Holding, ...]:
    """What each bound pod holds (see :func:`assign_holdings`)."""
    return assign_holdings(gpus, product, [pod_claim(p) for p in pods])


def _annotated_gpus(meta: Obj) -> list[int]:
    raw = (meta.get("annotations") or {}).get(names.ANN_GPUS)
    if not raw:
        return []
    try:
        return [int(x) for x in json.loads(raw)]
    except (ValueError, TypeError):  # the operator writes "0,1"
        return [int(x) for x in str(raw).split(",") if x.strip().isdigit()]


def pod_requests(pod: Obj) -> dict[str, str]:
    """A pod's effective requests: sum over containers (limits stand in for missing requests)."""
    total: Counter[str] = Counter()
    raw: dict[str, str] = {}
    meta = pod.get("metadata") or {}
    name = f"{meta.get('namespace') or 'default'}/{meta.get('name', '?')}"
    for ci, c in enumerate((pod.get("spec") or {}).get("containers") or []):
        res = c.get("resources") or {}
        for part in ("limits", "requests"):
            for k, v in (res.get(part) or {}).items():
                if part == "limits" and k in (res.get("requests") or {}):
                    continue
                where = _Where("Pod", name, f"spec.containers[{ci}].resources.{part}.{k}")
                if k == "cpu":
                    total[k] += parse_cpu(str(v), where)
                elif k == "memory":
                    total[k] += parse_memory_mib(str(v), where)
                else:
                    total[k] += _count(str(v), where)
    for k, v in total.items():
        raw[k] = f"{v}m" if k == "cpu" else f"{v}Mi" if k == "memory" else str(v)
    return raw


# ------------------------------------------------------------------------------------ scalars
@dataclass(frozen=True, slots=True)
class _Where:
    """Which object and field a quantity comes from, for the error when it is malformed."""

    kind: str
    name: str
    field: str


@functools.lru_cache(maxsize=8192)
def _quantity(value: str) -> Decimal | None:
    """A Kubernetes quantity, parsed by the Kubernetes client (memoised: fleets repeat a few
    values); ``None`` when it is not one (or not a finite, non-negative number)."""
    try:
        parsed: Decimal = _k8s_quantity(value.strip())  # type: ignore[no-untyped-call]
    except (ValueError, ArithmeticError):
        return None
    return parsed if parsed.is_finite() and parsed >= 0 else None


def _parsed(value: str, where: _Where | None, expected: str) -> Decimal:
    parsed = _quantity(value)
    if parsed is None:
        if where is None:
            raise ValueError(f"{value!r} is not {expected}")
        raise InvalidField(where.kind, where.name, where.field, value, expected)
    return parsed


def parse_cpu(value: str, where: _Where | None = None) -> int:
    """A CPU quantity (``"96"``, ``"95500m"``, ``"1.5"``) in millicores, rounded up."""
    millis = _parsed(value or "0", where, "a CPU quantity such as 4, 1.5 or 500m") * 1000
    return int(millis.to_integral_value(ROUND_CEILING))


def parse_memory_mib(value: str, where: _Where | None = None) -> int:
    """A memory quantity (``"1056Gi"``, ``"123456Ki"``, ``"8G"``, ``"1e9"``, bytes) in MiB, rounded down."""
    mib = _parsed(value or "0", where, "a memory quantity such as 512Mi, 40Gi or 8G") / 2**20
    return int(mib.to_integral_value(ROUND_FLOOR))


def _count(value: str | None, where: _Where) -> int:
    """A device count from allocatable or a pod's resources (``"8"``); malformed: :class:`InvalidField`."""
    if value is None or value == "":
        return 0
    parsed = _parsed(str(value), where, "a whole number of devices such as 8")
    if parsed != parsed.to_integral_value():
        raise InvalidField(where.kind, where.name, where.field, value, "a whole number of devices such as 8")
    return int(parsed)


def quantity(value: str | None) -> int:
    """An integer count from a label (``"8"``); 0 when absent or not an integer (labels are free
    text: a malformed one is ignored, not fatal)."""
    if not value:
        return 0
    parsed = _quantity(str(value))
    if parsed is None or parsed != parsed.to_integral_value():
        return 0
    return int(parsed)


def _tier(value: str | None, warnings: list[str]) -> PriceTier:
    if value is None:
        return PriceTier.ON_DEMAND
    try:
        return PriceTier(value)
    except ValueError:
        warnings.append(f"unknown {PRICE_TIER_LABEL} {value!r}: treated as on-demand")
        return PriceTier.ON_DEMAND


def _strategy(value: str | None) -> MigStrategy:
    try:
        return MigStrategy(value or "none")
    except ValueError:
        return MigStrategy.NONE


def _price(
    prices: Prices, key: str | None, tier: PriceTier, memory_mib: int, annotations: Mapping[str, str],
    override: Any, warnings: list[str], node: str = "", strict: bool = False,
) -> float:
    raw = annotations.get(PRICE_ANNOTATION)
    if raw:
        try:
            value = float(raw)
            if not math.isfinite(value) or value < 0:
                raise ValueError(raw)
            return value
        except ValueError:
            if strict:
                raise InvalidField("Node", node, f"metadata.annotations[{PRICE_ANNOTATION}]", raw,
                                   "a non-negative number of US dollars per GPU-hour such as 3.10") from None
            warnings.append(f"ignored {PRICE_ANNOTATION} {raw!r}: not a non-negative number")
    if override is not None and override.gpu_hour is not None:
        return float(override.gpu_hour)
    if not prices.known(key):
        warnings.append(f"no price configured for {key or 'this GPU'}: estimated from its memory")
    price = prices.gpu_hour(key, tier, memory_mib)
    if override is not None and override.multiplier is not None:
        price = prices.gpu_hour(key, PriceTier.ON_DEMAND, memory_mib) * float(override.multiplier)
    return round(price, 6)
