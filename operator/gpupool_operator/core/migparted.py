"""NVIDIA mig-parted's vocabulary: config names for per-GPU layouts, and its ``mig-configs`` format.

The one writer of the format: the ConfigMap adapter (``adapters/migconfig.py``) and
``core.plan.mig_parted_config`` both use :func:`mig_parted_devices`. A purely computational module.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from gpupool_operator.core.observed import PerGpu

__all__ = ["config_name", "layouts_json", "mig_parted_devices"]


def layouts_json(layouts: PerGpu) -> str:
    """The canonical JSON of per-GPU layouts (the ``gpupool.io/mig-layout*`` annotations' format)."""
    return json.dumps([dict(gpu) for gpu in layouts], sort_keys=True, separators=(",", ":"))


def config_name(layouts: PerGpu, named: Mapping[str, PerGpu] | None = None) -> str | None:
    """The ``nvidia.com/mig.config`` value for a node's per-GPU layout.

    With ``named`` (AllowList: config names -> the layout each gives this node) the name whose
    layout it is, or ``None`` when none is; otherwise ``all-disabled`` or ``gpupool-<hash>``
    (the same layout always gets the same name, on any node).
    """
    if named is not None:
        return next((name for name, laid in sorted(named.items()) if laid == layouts), None)
    if not any(layouts):
        return "all-disabled"
    return "gpupool-" + hashlib.sha256(layouts_json(layouts).encode()).hexdigest()[:10]


def mig_parted_devices(layouts: PerGpu) -> list[dict[str, Any]]:
    """A node's layout as one mig-parted ``mig-configs`` entry: devices grouped by identical layout.

    The one writer of the mig-parted format (the ConfigMap adapter and ``core.plan`` use it).
    """
    groups: dict[tuple[tuple[str, int], ...], list[int]] = {}
    for index, gpu in enumerate(layouts):
        groups.setdefault(gpu, []).append(index)
    entries: list[dict[str, Any]] = []
    for gpu, devices in groups.items():
        entry: dict[str, Any] = {"devices": devices, "mig-enabled": bool(gpu)}
        if gpu:
            entry["mig-devices"] = dict(gpu)
        entries.append(entry)
    return entries


