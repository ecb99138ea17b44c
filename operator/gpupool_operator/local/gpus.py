"""Emulated GPUs of a real local node: what ``nvidia-smi`` would report, kept in a JSON file.

This is the "hardware" behind the emulated NVIDIA device plugin (``deviceplugin``) and MIG
manager (``migmanager``): a product from the catalog, a number of GPUs, and per GPU either MIG
disabled (``mig: null``, one ``nvidia.com/gpu``) or its MIG instances with their start slots. The
MIG manager rewrites it (as ``nvidia-smi mig -cgi`` would change the hardware); the device plugin
reads it. The file is replaced atomically, so a reader never sees half of it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gpupool_operator.core import catalog, mig
from gpupool_operator.core.labels import EMULATED_LABEL

#: Device-plugin resource names.
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class Device:
    """One allocatable device: a whole GPU or one MIG instance."""

    id: str
    resource: str
    gpu: int
    profile: str | None = None
    start: int | None = None


@dataclass
class Gpu:
    index: int
    mig: list[tuple[str, int]] | None = None  # (profile, start) per instance; None = MIG disabled


@dataclass
class Hardware:
    node: str
    product: str  # catalog key, e.g. "A100-80GB"
    gpus: list[Gpu] = field(default_factory=list)
    strategy: str = "mixed"  # NVIDIA device plugin MIG strategy: none | single | mixed

    @property
    def spec(self) -> catalog.GpuProduct:
        return catalog.by_key(self.product)

    @classmethod
    def create(cls, node: str, product: str, layouts: list[dict[str, int] | None], strategy: str = "mixed") -> Hardware:
        """GPUs with the given per-GPU layouts (``None`` or ``{}`` with MIG off = a whole GPU)."""
        hw = cls(node=node, product=catalog.lookup(product).key, strategy=strategy)
        for i, layout in enumerate(layouts):
            hw.gpus.append(Gpu(i, hw.placed(layout) if layout else None))
        return hw

    def placed(self, counts: dict[str, int]) -> list[tuple[str, int]]:
        problem = mig.layout_problem(self.spec, counts)
        if problem:
            raise ValueError(problem)
        return [(p, s) for p, s in mig.place(self.spec, counts) or ()]

    def uuid(self, gpu: int) -> str:
        return f"GPU-emulated-{self.node}-{gpu}"

    def devices(self) -> list[Device]:
        out: list[Device] = []
        for g in self.gpus:
            if g.mig is None:
                out.append(Device(self.uuid(g.index), GPU_RESOURCE, g.index))
                continue
            for profile, start in g.mig:
                resource = GPU_RESOURCE if self.strategy == "single" else self.spec.profile(profile).resource_name
                out.append(Device(f"MIG-emulated-{self.node}-{g.index}-{profile}-{start}", resource, g.index,
                                  profile, start))
        return out

    def by_resource(self) -> dict[str, list[Device]]:
        out: dict[str, list[Device]] = {}
        for d in self.devices():
            out.setdefault(d.resource, []).append(d)
        return out

    def layouts(self) -> list[dict[str, int]]:
        """Per GPU {profile: count} (``{}`` for a whole GPU), as the ``gpupool.io/mig-layout`` annotation."""
        return [dict(Counter(p for p, _ in g.mig)) if g.mig is not None else {} for g in self.gpus]

    def gfd_labels(self) -> dict[str, str | None]:
        """GPU Feature Discovery's labels for this hardware (``None`` removes a stale one)."""
        spec = self.spec
        labels: dict[str, str | None] = {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": spec.product_label,
            "nvidia.com/gpu.count": str(len(self.gpus)),
            "nvidia.com/gpu.memory": str(spec.memory_mib),
            "nvidia.com/gpu.family": spec.family,
            "nvidia.com/gpu.compute.major": str(spec.compute_major),
            "nvidia.com/gpu.compute.minor": str(spec.compute_minor),
            "nvidia.com/gpu.replicas": "1",
            "nvidia.com/mig.capable": "true" if spec.mig_capable else "false",
            "nvidia.com/mps.capable": "false",
            EMULATED_LABEL: "true",
        }
        if spec.mig_capable:
            labels["nvidia.com/mig.strategy"] = self.strategy if self.strategy != "none" else "mixed"
            totals: Counter[str] = Counter()
            for g in self.gpus:
                totals.update(p for p, _ in g.mig or ())
            for prof in spec.mig_profiles:
                prefix = prof.resource_name
                n = totals.get(prof.name, 0)
                for suffix, value in (("count", n), ("memory", prof.memory_mib),
                                      ("multiprocessors", prof.multiprocessors),
                                      ("slices.gi", prof.compute_slices), ("slices.ci", prof.compute_slices),
                                      ("engines.copy", prof.compute_slices)):
                    labels[f"{prefix}.{suffix}"] = str(value) if n else None
        return labels

    # -- the file --------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({"node": self.node, "product": self.product, "strategy": self.strategy,
                           "gpus": [{"index": g.index, "mig": g.mig} for g in self.gpus]}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Hardware:
        raw = json.loads(text)
        gpus = [Gpu(g["index"], [(p, int(s)) for p, s in g["mig"]] if g["mig"] is not None else None)
                for g in raw["gpus"]]
        return cls(node=raw["node"], product=raw["product"], gpus=gpus, strategy=raw.get("strategy", "mixed"))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Hardware:
        return cls.from_json(path.read_text())
