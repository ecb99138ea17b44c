"""Driving NVIDIA's MIG manager: layout names, its mig-parted ConfigMap, and the node label protocol.

The protocol (NVIDIA GPU Operator): set ``nvidia.com/mig.config=<name>`` on a node; the MIG manager
applies the named entry of its ConfigMap and reports ``nvidia.com/mig.config.state`` (pending,
rebooting, success, failed). The operator

1. writes the layout into the ConfigMap under a name derived from its content (same layout, same
   name, on any node), and only then labels the node;
2. sets the state label to ``pending`` in the same patch, so the previous ``success`` is never taken
   for the new one, and records the per-GPU target and the previous config name in annotations;
3. commits (``gpupool.io/mig-layout`` = target) once the state is ``success`` *and* allocatable
   shows the new resources; on ``failed`` it restores the previous config, records the failure (the
   node is left out of MIG placement for a cool-down) and deletes the replicas gated on it.

Pure helpers here; the reconciler makes the calls.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from gpupool_operator.adapters import names
from gpupool_operator.core.mig import Placement, placement_counts

__all__ = [
    "CONFIG_KEY",
    "allocatable_matches",
    "config_name",
    "layouts_json",
    "mig_parted_document",
    "per_gpu_counts",
]

CONFIG_KEY = "config.yaml"
GPU = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"

PerGpu = list[dict[str, int]]


def per_gpu_counts(layouts: Sequence[Placement | None]) -> PerGpu:
    """Placements (None = MIG disabled) as the annotation's per-GPU {profile: count} list."""
    return [{} if p is None else dict(placement_counts(p)) for p in layouts]


def layouts_json(layouts: PerGpu) -> str:
    return json.dumps([dict(sorted(x.items())) for x in layouts], sort_keys=True, separators=(",", ":"))


def config_name(layouts: PerGpu) -> str:
    """A mig-parted config name for a node's per-GPU layout: the same layout always gets the same name."""
    if not any(layouts):
        return "all-disabled"
    digest = hashlib.sha256(layouts_json(layouts).encode()).hexdigest()[:10]
    return f"gpupool-{digest}"


def mig_parted_entry(layouts: PerGpu) -> list[dict[str, Any]]:
    """One ``mig-configs`` entry: devices grouped by identical layout."""
    groups: dict[str, list[int]] = {}
    for index, counts in enumerate(layouts):
        groups.setdefault(json.dumps(counts, sort_keys=True), []).append(index)
    entries: list[dict[str, Any]] = []
    for key, devices in groups.items():
        counts = json.loads(key)
        entry: dict[str, Any] = {"devices": devices, "mig-enabled": bool(counts)}
        if counts:
            entry["mig-devices"] = {k: int(v) for k, v in counts.items()}
        entries.append(entry)
    return entries


def mig_parted_document(existing: str | None, additions: Mapping[str, PerGpu]) -> tuple[str, bool]:
    """The ConfigMap's ``config.yaml`` with ``additions`` merged in; whether it changed."""
    doc: dict[str, Any] = {}
    if existing:
        loaded = yaml.safe_load(existing)
        if isinstance(loaded, dict):
            doc = loaded
    doc.setdefault("version", "v1")
    configs = doc.setdefault("mig-configs", {})
    changed = False
    for name, layouts in additions.items():
        if name in configs:
            continue
        configs[name] = mig_parted_entry(layouts)
        changed = True
    return yaml.safe_dump(doc, sort_keys=True), changed


def allocatable_matches(node: Mapping[str, Any], layouts: PerGpu) -> bool:
    """Whether the node's allocatable advertises exactly the MIG resources ``layouts`` create."""
    alloc = node.get("status", {}).get("allocatable", {}) or {}
    want: Counter[str] = Counter()
    for counts in layouts:
        for profile, n in counts.items():
            want[MIG_PREFIX + profile.replace("+", ".")] += n
    have = {k: int(str(v)) for k, v in alloc.items() if k.startswith(MIG_PREFIX) and int(str(v)) > 0}
    whole = sum(1 for c in layouts if not c)
    return have == {k: v for k, v in want.items() if v} and int(str(alloc.get(GPU, "0"))) == whole


def node_layouts(node: Mapping[str, Any]) -> tuple[PerGpu | None, PerGpu | None]:
    """(current, target) per-GPU layouts from the node's annotations."""
    ann = node.get("metadata", {}).get("annotations", {}) or {}

    def parse(raw: str | None) -> PerGpu | None:
        if not raw:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return [{str(k): int(v) for k, v in (x or {}).items() if int(v) > 0} for x in value]

    return parse(ann.get(names.ANN_MIG_LAYOUT)), parse(ann.get(names.ANN_MIG_LAYOUT_TARGET))
