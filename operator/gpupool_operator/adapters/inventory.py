"""Node and Pod objects (plain dicts, exactly as ``kubectl get -o yaml/json`` prints them) -> Snapshot.

The only place that knows GFD label names, device-plugin resource names and the ``gpupool.io/*``
labels and annotations. Works on dicts so the same code serves the operator (kubernetes client
objects turned into dicts), ``gpupool plan`` (files) and tests.

Per-GPU MIG layouts come, in order of trust, from the ``gpupool.io/mig-layout`` annotation (one
``{profile: count}`` map per GPU index, ``{}`` = MIG disabled), from a well-known
``nvidia.com/mig.config`` name (``all-disabled``, ``all-enabled``, ``all-<profile>``,
``all-balanced``), or else from the allocatable MIG resources spread over the node's GPUs
deterministically (largest instances first, lowest GPU index first). Real clusters do not say
which physical GPU a pod's MIG device sits on, so bound pods are assigned to GPUs the same way.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gpupool_operator.adapters import names
from gpupool_operator.core import catalog, mig
from gpupool_operator.core.cost import Prices, PriceTier, default_prices
from gpupool_operator.core.inventory import Gpu, Holding, MigStrategy, Node, Snapshot
from gpupool_operator.core.mig import Placement

__all__ = [
    "GPU",
    "MIG_LAYOUT_ANNOTATION",
    "MIG_PREFIX",
    "MODEL_LABEL",
    "POOL_LABEL",
    "PRICE_ANNOTATION",
    "PRICE_TIER_LABEL",
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
#: Labels on our replica pods: the InferencePool and model they serve.
POOL_LABEL = "gpupool.io/inference-pool"
MODEL_LABEL = "gpupool.io/model"
#: Optional annotation on our pods: the GPU indices they run on (JSON list, or the operator's
#: comma-separated ``0,1``), when known. The operator's replicas are also recognised by their
#: ``gpupool.io/demand`` annotation (see adapters/names.py).
GPUS_ANNOTATION = "gpupool.io/gpus"

GPU = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"
_UNSCHEDULABLE_TAINTS = ("node.kubernetes.io/unschedulable", "node.kubernetes.io/not-ready",
                         "node.kubernetes.io/unreachable")
_TERMINAL = ("Succeeded", "Failed")

Obj = Mapping[str, Any]


def snapshot_from_objects(
    nodes: Iterable[Obj], pods: Iterable[Obj] = (), prices: Prices | None = None
) -> Snapshot:
    """Build the core's inventory snapshot from Node and Pod objects."""
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
        built.append(node_from_object(obj, by_node.get(name, []), prices))
    return Snapshot(tuple(built), cpu_price=prices.cpu_per_core_hour, warnings=tuple(warnings))


def node_from_object(obj: Obj, pods: Iterable[Obj] = (), prices: Prices | None = None) -> Node:
    """One Node object (and the pods bound to it) as the core sees it."""
    prices = prices or default_prices()
    meta = obj.get("metadata") or {}
    name = str(meta["name"])
    labels: dict[str, str] = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    annotations: dict[str, str] = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    status = obj.get("status") or {}
    raw_alloc = status.get("allocatable") or status.get("capacity") or {}
    alloc: dict[str, str] = {str(k): str(v) for k, v in raw_alloc.items()}
    warnings: list[str] = []

    schedulable = not (obj.get("spec") or {}).get("unschedulable", False)
    for taint in (obj.get("spec") or {}).get("taints") or []:
        if taint.get("key") in _UNSCHEDULABLE_TAINTS and taint.get("effect") in ("NoSchedule", "NoExecute"):
            schedulable = False
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") != "True":
            schedulable = False
            warnings.append("not Ready: no new replicas go here")

    cpu = parse_cpu(alloc.get("cpu", "0"))
    memory = parse_memory_mib(alloc.get("memory", "0"))
    tier = _tier(labels.get(PRICE_TIER_LABEL), warnings)
    override = prices.node_override(labels)
    if override is not None and override.tier is not None:
        tier = override.tier

    product_label = labels.get("nvidia.com/gpu.product", "")
    strategy = _strategy(labels.get("nvidia.com/mig.strategy"))
    whole_alloc = quantity(alloc.get(GPU))
    mig_alloc = {
        k[len(MIG_PREFIX):]: quantity(v) for k, v in alloc.items() if k.startswith(MIG_PREFIX) and quantity(v) > 0
    }
    gpu_count = quantity(labels.get("nvidia.com/gpu.count"))
    if not product_label and not whole_alloc and not mig_alloc:
        return Node(name=name, cpu_millis=cpu, memory_mib=memory, price_tier=tier,
                    holdings=_holdings(pods, None, ()), schedulable=schedulable, warnings=tuple(warnings))

    product = catalog.by_product_label(product_label) if product_label else None
    if strategy is MigStrategy.SINGLE and "-MIG-" in product_label and gpu_count:
        # Under `single` GFD reports slices: gpu.count counts slices, not GPUs.
        per_gpu = _single_profile_count(product, product_label)
        gpu_count = max(1, math.ceil(gpu_count / per_gpu)) if per_gpu else gpu_count
    if not gpu_count:
        gpu_count = whole_alloc + (math.ceil(sum(mig_alloc.values()) / 7) if mig_alloc else 0)
    gpu_memory = quantity(labels.get("nvidia.com/gpu.memory")) or (product.memory_mib if product else 0)
    if product is None:
        warnings.append(
            f"unknown GPU product {product_label or '(no nvidia.com/gpu.product label)'}: used as "
            f"{gpu_count} whole non-MIG GPU(s) of {gpu_memory} MiB"
        )
        if strategy is MigStrategy.SINGLE:
            gpu_memory = quantity(labels.get("nvidia.com/gpu.memory"))
    layouts = _layouts(product, gpu_count, annotations, labels, strategy, whole_alloc, mig_alloc, warnings)
    key = product.key if product else None
    price = _price(prices, key, tier, gpu_memory, annotations, override, warnings)
    mig_ready = labels.get("nvidia.com/mig.config.state", "success") == "success"
    if not mig_ready:
        warnings.append(
            f"MIG manager state {labels.get('nvidia.com/mig.config.state')}: its MIG GPUs take no new replicas"
        )
    gpus = tuple(Gpu(i, layouts[i]) for i in range(gpu_count))
    mig_memory: list[tuple[str, int]] = []
    if product is not None and product.mig_capable:
        for label, value in labels.items():
            if label.startswith(MIG_PREFIX) and label.endswith(".memory"):
                profile = profile_from_resource(product, label[len(MIG_PREFIX):-len(".memory")])
                mib = quantity(value)
                if profile is not None and mib > 0:
                    mig_memory.append((profile, mib))
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
        mig_memory=tuple(sorted(mig_memory)),
    )


# ------------------------------------------------------------------------------------ layouts
def _layouts(
    product: catalog.GpuProduct | None, count: int, annotations: Mapping[str, str], labels: Mapping[str, str],
    strategy: MigStrategy, whole_alloc: int, mig_alloc: Mapping[str, int], warnings: list[str],
) -> list[Placement | None]:
    if product is None or not product.mig_capable:
        return [None] * count
    raw = annotations.get(MIG_LAYOUT_ANNOTATION)
    if raw:
        got = layouts_from_annotation(product, count, raw, warnings)
        if got is not None:
            return got
    config = labels.get("nvidia.com/mig.config", "")
    known, named = _named_layout(product, config)
    if known:
        return [named] * count
    if strategy is MigStrategy.SINGLE:
        prof = _single_profile(labels.get("nvidia.com/gpu.product", ""))
        if prof is not None:
            return [_full(product, prof)] * count
    if not mig_alloc:
        return [None] * count
    return _spread(product, count, whole_alloc, mig_alloc, warnings)


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


def _named_layout(product: catalog.GpuProduct, config: str) -> tuple[bool, Placement | None]:
    """``(True, layout)`` for a well-known mig-parted config name, ``(False, None)`` otherwise."""
    if config == "all-disabled":
        return True, None
    if config == "all-enabled":
        return True, ()
    if config == "all-balanced":
        ones = [p for p in product.mig_profiles if p.compute_slices == 1 and p.memory_slots == 1
                and not p.is_media_extension]
        twos = [p for p in product.mig_profiles if p.compute_slices == 2]
        threes = [p for p in product.mig_profiles if p.compute_slices == 3]
        if ones and twos and threes:
            return True, mig.place(product, {ones[0].name: 2, twos[0].name: 1, threes[0].name: 1})
        return False, None
    if config.startswith("all-"):
        name = config[4:]
        if any(p.name == name or p.name.replace("+", ".") == name for p in product.mig_profiles):
            prof = next(p for p in product.mig_profiles if p.name == name or p.name.replace("+", ".") == name)
            return True, _full(product, prof.name)
    return False, None


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
    """Distribute allocatable MIG instances over the node's MIG GPUs (the last ``whole`` stay whole)."""
    mig_gpus = max(0, count - whole)
    todo: list[str] = []
    for res, n in sorted(mig_alloc.items()):
        name = profile_from_resource(product, res)
        if name is None:
            warnings.append(f"unknown MIG resource nvidia.com/mig-{res} for {product.key}: ignored")
            continue
        todo += [name] * n
    todo.sort(key=lambda p: (-product.profile(p).memory_slots, -product.profile(p).compute_slices, p))
    content: list[dict[str, int]] = [{} for _ in range(mig_gpus)]
    lost = 0
    for prof in todo:
        for c in content:
            if mig.add(product.key, mig.counts_key(c), prof) is not None:
                c[prof] = c.get(prof, 0) + 1
                break
        else:
            lost += 1
    if lost:
        warnings.append(f"{lost} allocatable MIG instance(s) did not fit {mig_gpus} GPU(s); ignored")
    out: list[Placement | None] = [_place(product, c) if c else () for c in content]
    return out + [None] * (count - mig_gpus)


def profile_from_resource(product: catalog.GpuProduct, res: str) -> str | None:
    """The MIG profile behind a resource suffix (``1g.10gb.me`` -> ``1g.10gb+me``), if ``product`` has it."""
    for p in product.mig_profiles:
        if p.name.replace("+", ".") == res:
            return p.name
    return None


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
    ``gpupool.io/inference-pool`` and ``gpupool.io/model`` labels; indices and the MIG instance come
    from the annotations the operator writes (``gpupool.io/gpus``, ``gpupool.io/mig-instance``)."""
    meta = pod["metadata"]
    ns = str(meta.get("namespace") or "default")
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    owner = None
    demand = annotations.get(names.ANN_DEMAND)
    if labels.get(names.LABEL_MANAGED_BY) == names.MANAGED_BY and demand:  # the operator's replicas
        owner = str(demand)
    elif POOL_LABEL in labels and MODEL_LABEL in labels:
        owner = f"{ns}/{labels[POOL_LABEL]}/{labels[MODEL_LABEL]}"
    req = pod_requests(pod)
    mig_res = next((k[len(MIG_PREFIX):] for k in sorted(req) if k.startswith(MIG_PREFIX) and quantity(req[k]) > 0),
                   None)
    instance = None
    raw = str(annotations.get(names.ANN_MIG_INSTANCE) or "")
    parts = raw.split(":")
    if len(parts) == 3 and parts[0].isdigit() and parts[2].isdigit():
        instance = (int(parts[0]), parts[1], int(parts[2]))
    return PodClaim(
        pod=f"{ns}/{meta['name']}",
        owner=owner,
        gpus=quantity(req.get(GPU)),
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
    raw = (meta.get("annotations") or {}).get(GPUS_ANNOTATION)
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
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        merged = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        for k, v in merged.items():
            if k == "cpu":
                total[k] += parse_cpu(str(v))
            elif k == "memory":
                total[k] += parse_memory_mib(str(v))
            else:
                total[k] += quantity(str(v))
    for k, v in total.items():
        raw[k] = f"{v}m" if k == "cpu" else f"{v}Mi" if k == "memory" else str(v)
    return raw


# ------------------------------------------------------------------------------------ scalars
_QTY = re.compile(r"^([0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")  # 1e9: decimal exponent
_BIN = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DEC = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18, "m": 10**-3}


def parse_cpu(value: str) -> int:
    """A CPU quantity (``"96"``, ``"95500m"``, ``"1.5"``) in millicores."""
    value = value.strip()
    if value.endswith("m"):
        return int(float(value[:-1]))
    return round(float(value or 0) * 1000)


def parse_memory_mib(value: str) -> int:
    """A memory quantity (``"1056Gi"``, ``"123456Ki"``, ``"8G"``, ``"1e9"``, bytes) in MiB, rounded down."""
    m = _QTY.match(value.strip())
    if not m:
        raise ValueError(f"{value!r} is not a memory quantity")
    number, suffix = float(m.group(1)), m.group(2)
    factor = _BIN.get(suffix) or _DEC.get(suffix)
    if factor is None:
        raise ValueError(f"{value!r}: unknown unit {suffix!r}")
    return int(number * factor // 2**20)


def quantity(value: str | None) -> int:
    """An integer resource count (``"8"``); 0 when absent or not an integer."""
    if not value:
        return 0
    try:
        return int(value)
    except ValueError:
        return 0


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
    override: Any, warnings: list[str],
) -> float:
    raw = annotations.get(PRICE_ANNOTATION)
    if raw:
        try:
            return float(raw)
        except ValueError:
            warnings.append(f"ignored {PRICE_ANNOTATION} {raw!r}: not a number")
    if override is not None and override.gpu_hour is not None:
        return float(override.gpu_hour)
    if not prices.known(key):
        warnings.append(f"no price configured for {key or 'this GPU'}: estimated from its memory")
    price = prices.gpu_hour(key, tier, memory_mib)
    if override is not None and override.multiplier is not None:
        price = prices.gpu_hour(key, PriceTier.ON_DEMAND, memory_mib) * float(override.multiplier)
    return round(price, 6)
