"""Node and Pod objects (as the API serves them) -> the core's immutable inventory snapshot.

What the operator knows that a generic reader of nodes does not: which GPU and which MIG instance
each of its own replicas holds (annotations it wrote on the pod), the layout it asked NVIDIA's MIG
manager for on a node still reconfiguring (``gpupool.io/mig-layout-target``: the replicas gated on
it count as placed there, so the next cycle does not plan them again), and nodes whose last
re-layout failed (left out of MIG placement for a cool-down). Prices come from the GPUPoolConfig.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from gpupool_operator.adapters import names
from gpupool_operator.api import GPUPoolConfig
from gpupool_operator.core import catalog, mig
from gpupool_operator.core.cost import Prices, PriceTier
from gpupool_operator.core.inventory import Gpu, Holding, MigStrategy, Node, Snapshot

__all__ = [
    "PodView",
    "build_snapshot",
    "layout_counts",
    "parse_cpu_millis",
    "parse_memory_mib",
    "pod_view",
]

Obj = Mapping[str, Any]
GPU = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"
PRICE_TIER_LABEL = "gpupool.io/price-tier"
PRICE_ANNOTATION = "gpupool.io/price-per-gpu-hour"
_CPU_RE = re.compile(r"^([0-9.]+)(m?)$")
_MEM_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
              "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1}
_MEM_RE = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")


def parse_cpu_millis(value: str | int | None) -> int:
    if value is None:
        return 0
    m = _CPU_RE.match(str(value))
    if not m:
        return 0
    number = float(m.group(1))
    return int(number) if m.group(2) else int(number * 1000)


def parse_memory_mib(value: str | int | None) -> int:
    if value is None:
        return 0
    m = _MEM_RE.match(str(value))
    if not m or m.group(2) not in _MEM_UNITS:
        return 0
    number = float(m.group(1)) * _MEM_UNITS[m.group(2)]
    if m.group(2) == "m":
        number /= 1000
    return int(number // 2**20)


@dataclass(frozen=True, slots=True)
class PodView:
    """What the snapshot needs of one pod."""

    key: str  # namespace/name
    node: str | None
    demand: str | None  # set for our replicas that still count
    gpus: int
    gpu_indices: tuple[int, ...]
    mig: tuple[str, int] | None  # (profile name, count) requested
    instance: tuple[int, str, int] | None
    cpu_millis: int
    memory_mib: int


def _requests(pod: Obj) -> tuple[dict[str, int], int, int]:
    extended: dict[str, int] = {}
    cpu = mem = 0
    for container in pod.get("spec", {}).get("containers", []):
        res = container.get("resources", {})
        limits = res.get("limits", {}) or {}
        requests = res.get("requests", {}) or {}
        for name, value in {**requests, **limits}.items():
            if name.startswith("nvidia.com/"):
                extended[name] = extended.get(name, 0) + int(str(value))
        cpu += parse_cpu_millis(requests.get("cpu", limits.get("cpu")))
        mem += parse_memory_mib(requests.get("memory", limits.get("memory")))
    return extended, cpu, mem


def pod_view(pod: Obj) -> PodView | None:
    """``None`` for pods that hold nothing (finished, or neither bound nor ours)."""
    meta = pod.get("metadata", {})
    status = pod.get("status", {})
    if status.get("phase") in ("Succeeded", "Failed"):
        return None
    ann = meta.get("annotations", {}) or {}
    labels = meta.get("labels", {}) or {}
    ours = labels.get(names.LABEL_MANAGED_BY) == names.MANAGED_BY and names.ANN_DEMAND in ann
    node = pod.get("spec", {}).get("nodeName") or (ann.get(names.ANN_NODE) if ours else None)
    if not node:
        return None
    extended, cpu, mem = _requests(pod)
    profile = next(((k[len(MIG_PREFIX):], v) for k, v in extended.items() if k.startswith(MIG_PREFIX)), None)
    indices: tuple[int, ...] = ()
    instance = None
    if ours:
        raw = ann.get(names.ANN_GPUS, "")
        indices = tuple(int(x) for x in raw.split(",") if x.strip().isdigit())
        inst = ann.get(names.ANN_MIG_INSTANCE)
        if inst:
            gpu, prof, start = inst.split(":")
            instance = (int(gpu), prof, int(start))
    counted = ours and not meta.get("deletionTimestamp")
    return PodView(
        key=f"{meta.get('namespace')}/{meta.get('name')}",
        node=node,
        demand=ann[names.ANN_DEMAND] if counted else None,
        gpus=extended.get(GPU, 0),
        gpu_indices=indices,
        mig=profile,
        instance=instance,
        cpu_millis=cpu,
        memory_mib=mem,
    )


def layout_counts(raw: str | None, gpus: int) -> list[dict[str, int]] | None:
    """The per-GPU layout annotation, or ``None`` when absent or malformed."""
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(value, list) or len(value) != gpus:
        return None
    return [{str(k): int(v) for k, v in (item or {}).items() if int(v) > 0} for item in value]


def _infer_layouts(product: catalog.GpuProduct, gpus: int, allocatable: Obj) -> list[dict[str, int]]:
    """No annotation: whole GPUs first (allocatable nvidia.com/gpu), slices packed onto the rest."""
    whole = int(str(allocatable.get(GPU, "0")))
    totals = {
        k[len(MIG_PREFIX):]: int(str(v)) for k, v in allocatable.items() if k.startswith(MIG_PREFIX)
    }
    layouts: list[dict[str, int]] = [{} for _ in range(gpus)]
    names_ = sorted(totals, key=lambda n: -product.profile(n).memory_slots if _has(product, n) else 0)
    for i in range(min(whole, gpus), gpus):
        for name in names_:
            if not _has(product, name):
                continue
            while totals[name] > 0:
                trial = {**layouts[i], name: layouts[i].get(name, 0) + 1}
                if mig.layout_problem(product, trial) is not None:
                    break
                layouts[i] = trial
                totals[name] -= 1
    return layouts


@functools.lru_cache(maxsize=4096)
def _placement(product_key: str, counts: tuple[tuple[str, int], ...]) -> mig.Placement | None:
    """Start slots for a layout; cached: a fleet has few distinct layouts and this backtracks."""
    return mig.place(catalog.by_key(product_key), dict(counts))


def _has(product: catalog.GpuProduct, name: str) -> bool:
    return any(p.name == name for p in product.mig_profiles)


def _tier(labels: Mapping[str, str]) -> PriceTier:
    raw = labels.get(PRICE_TIER_LABEL) or labels.get("karpenter.sh/capacity-type", "")
    try:
        return PriceTier(raw.lower())
    except ValueError:
        return PriceTier.ON_DEMAND


def _ready(node: Obj) -> bool:
    conds = node.get("status", {}).get("conditions", []) or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def _gpu_price(config: GPUPoolConfig, prices: Prices, node: Obj, key: str | None, tier: PriceTier,
               memory_mib: int) -> float:
    meta = node.get("metadata", {})
    labels = meta.get("labels", {}) or {}
    explicit = (meta.get("annotations", {}) or {}).get(PRICE_ANNOTATION)
    if explicit:
        try:
            return float(explicit)
        except ValueError:
            pass
    base = prices.gpu_hour(key, PriceTier.ON_DEMAND, memory_mib)
    for override in config.spec.node_overrides:
        if all(labels.get(k) == v for k, v in override.node_selector.items()):
            if override.usd_per_gpu_hour is not None:
                return float(override.usd_per_gpu_hour)
            if override.price_multiplier is not None:
                return round(base * float(override.price_multiplier), 6)
    return prices.gpu_hour(key, tier, memory_mib)


def _assign_holdings(gpus: list[Gpu], views: list[PodView]) -> tuple[Holding, ...]:
    """Holdings with concrete GPU indices; foreign pods take the first free GPU or instance."""
    whole_used: set[int] = set()
    taken: set[tuple[int, str, int]] = set()
    holdings: list[Holding] = []
    layouts = {g.index: g.layout for g in gpus}
    ordered = sorted(views, key=lambda v: (v.demand is None, v.key))  # ours first: their indices are known
    for v in ordered:
        owner = v.demand
        if v.mig is not None:
            profile = v.mig[0].replace(".me", "+me")
            want = v.instance
            chosen: tuple[int, str, int] | None = None
            candidates = [(i, n, s) for i, lay in layouts.items() if lay for n, s in lay if n == profile]
            if want is not None and (want[0], profile, want[2]) in candidates and want not in taken:
                chosen = (want[0], profile, want[2])
            else:
                same_gpu = [c for c in candidates if c not in taken and (want is None or c[0] == want[0])]
                rest = [c for c in candidates if c not in taken]
                pick = same_gpu or rest
                chosen = pick[0] if pick else None
            if chosen is None:
                holdings.append(Holding(v.key, owner, cpu_millis=v.cpu_millis, memory_mib=v.memory_mib))
                continue
            taken.add(chosen)
            holdings.append(Holding(v.key, owner, instance=chosen, cpu_millis=v.cpu_millis, memory_mib=v.memory_mib))
        elif v.gpus:
            indices = [i for i in v.gpu_indices if i in layouts and i not in whole_used]
            if len(indices) != v.gpus:
                free = [i for i in sorted(layouts) if i not in whole_used and i not in indices]
                indices = (indices + free)[: v.gpus]
            whole_used.update(indices)
            holdings.append(Holding(v.key, owner, gpus=tuple(indices), cpu_millis=v.cpu_millis,
                                    memory_mib=v.memory_mib))
        else:
            holdings.append(Holding(v.key, owner, cpu_millis=v.cpu_millis, memory_mib=v.memory_mib))
    return tuple(holdings)


def build_snapshot(
    nodes: Iterable[Obj],
    pods: Iterable[Obj],
    config: GPUPoolConfig,
    prices: Prices,
    now: float,
    failed_cooldown_s: float = 600.0,
) -> Snapshot:
    """The snapshot one placement cycle sees. ``now`` (unix seconds) ages MIG failures."""
    by_node: dict[str, list[PodView]] = {}
    for pod in pods:
        view = pod_view(pod)
        if view is not None and view.node:
            by_node.setdefault(view.node, []).append(view)
    out: list[Node] = []
    warnings: list[str] = []
    for obj in nodes:
        meta = obj.get("metadata", {})
        name = meta["name"]
        labels = meta.get("labels", {}) or {}
        ann = meta.get("annotations", {}) or {}
        alloc = obj.get("status", {}).get("allocatable", {}) or {}
        product_label = labels.get("nvidia.com/gpu.product", "")
        product = catalog.by_product_label(product_label) if product_label else None
        try:
            count = int(labels.get("nvidia.com/gpu.count", "0"))
        except ValueError:
            count = 0
        if not product_label:
            count = 0
        strategy_raw = labels.get("nvidia.com/mig.strategy", "none")
        try:
            strategy = MigStrategy(strategy_raw)
        except ValueError:
            strategy = MigStrategy.NONE
        node_warnings: list[str] = []
        state = labels.get(names.LABEL_MIG_CONFIG_STATE, "success")
        target = ann.get(names.ANN_MIG_LAYOUT_TARGET)
        failed = ann.get(names.ANN_MIG_FAILED, "")
        recently_failed = False
        if failed:
            try:
                recently_failed = now - float(failed.split(" ", 1)[0]) < failed_cooldown_s
            except ValueError:
                recently_failed = False
        gpus: list[Gpu] = []
        if count and product is not None and product.mig_capable and strategy is MigStrategy.MIXED:
            layouts = layout_counts(target, count) or layout_counts(ann.get(names.ANN_MIG_LAYOUT), count)
            if layouts is None:
                layouts = _infer_layouts(product, count, alloc)
                node_warnings.append("no gpupool.io/mig-layout annotation: per-GPU layout inferred from allocatable")
            for i, counts in enumerate(layouts):
                placement = _placement(product.key, tuple(sorted(counts.items()))) if counts else None
                gpus.append(Gpu(i, placement))
        else:
            gpus = [Gpu(i) for i in range(count)]
        if product_label and product is None:
            node_warnings.append(f"unknown GPU product {product_label!r}: used as whole, non-MIG GPUs")
        mig_ready = state == "success" and not target and not recently_failed
        tier = _tier(labels)
        memory_mib = int(labels.get("nvidia.com/gpu.memory", "0") or 0) if product_label else 0
        key = product.key if product is not None else None
        schedulable = _ready(obj) and not obj.get("spec", {}).get("unschedulable", False) and not meta.get(
            "deletionTimestamp"
        )
        views = by_node.get(name, [])
        if not schedulable:  # cordoned or gone: our replicas there still hold, but no longer count
            views = [replace(v, demand=None) for v in views]
        out.append(
            Node(
                name=name,
                cpu_millis=parse_cpu_millis(alloc.get("cpu")),
                memory_mib=parse_memory_mib(alloc.get("memory")),
                product=key,
                product_label=product_label,
                gpu_memory_mib=memory_mib or (product.memory_mib if product else 0),
                gpus=tuple(gpus),
                mig_strategy=strategy,
                mig_ready=mig_ready,
                price_tier=tier,
                gpu_price=_gpu_price(config, prices, obj, key, tier, memory_mib) if count else 0.0,
                holdings=_assign_holdings(gpus, views),
                schedulable=schedulable,
                warnings=tuple(node_warnings),
            )
        )
    known = {n.name for n in out}
    for node_name in sorted(set(by_node) - known):
        if any(v.demand for v in by_node[node_name]):
            warnings.append(f"replicas on {node_name}, which no longer exists: they are placed again")
    return Snapshot(nodes=tuple(out), cpu_price=prices.cpu_per_core_hour, warnings=tuple(warnings))
