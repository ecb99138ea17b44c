"""What one cycle observed of the cluster, as plain frozen facts: the decide stage's input.

The observe stage (``adapters/observe.py``) reads Kubernetes objects and fills these in; the
decide stage (``core/decide.py``) computes with them and never sees an API object, a label name
or a clock. Layouts are per GPU, each a sorted tuple of ``(profile, count)`` (``()``: MIG disabled),
so facts compare and hash by value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "ForeignPod",
    "MigNode",
    "MigRequest",
    "PerGpu",
    "PoolRef",
    "Replica",
    "ServiceFact",
    "as_dicts",
    "changed_gpus",
    "per_gpu",
]

PerGpu = tuple[tuple[tuple[str, int], ...], ...]
"""Per-GPU MIG layouts: for each GPU index, its instances as sorted ``(profile, count)`` pairs."""


def per_gpu(layouts: Sequence[Mapping[str, int]]) -> PerGpu:
    """``[{profile: count}, ...]`` as :data:`PerGpu` (zero counts dropped)."""
    return tuple(tuple(sorted((str(k), int(v)) for k, v in gpu.items() if int(v) > 0)) for gpu in layouts)


def as_dicts(layouts: PerGpu) -> list[dict[str, int]]:
    return [dict(gpu) for gpu in layouts]


def changed_gpus(current: PerGpu | None, target: PerGpu) -> frozenset[int]:
    """The GPUs whose layout differs between ``current`` and ``target`` (all of them when unknown)."""
    if current is None or len(current) != len(target):
        return frozenset(range(len(target)))
    return frozenset(i for i, (a, b) in enumerate(zip(current, target, strict=True)) if a != b)


@dataclass(frozen=True, slots=True)
class PoolRef:
    """A pool the cycle knows: its key (``namespace/name``), uid and models."""

    key: str
    uid: str
    models: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Replica:
    """One of the operator's replica pods: in its pool's namespace and owned by the pool's uid."""

    key: str  # namespace/name
    uid: str
    pool: str  # namespace/name of the owning pool
    demand: str  # namespace/pool/model
    index: int | None  # the replica label
    node: str | None  # where it is bound, else the node the plan pinned it to
    bound: bool
    deleting: bool
    finished: bool  # phase Succeeded or Failed
    phase: str
    mig_gated: bool  # held by the operator's MIG scheduling gate
    gated: bool  # held by any scheduling gate
    ready: bool
    gpus: frozenset[int]  # GPU indices it holds (whole GPUs, or its MIG instance's GPU)
    holds_gpu: bool  # requests any nvidia.com/ resource
    refused_since: float | None = None  # kube-scheduler refused it since (unix seconds)
    refused_message: str = ""
    ip: str | None = None


@dataclass(frozen=True, slots=True)
class ForeignPod:
    """A live pod bound to a node that is not one of the operator's replicas."""

    key: str
    node: str
    whole_gpus: int  # nvidia.com/gpu it requests
    mig_profiles: tuple[str, ...]  # MIG profiles it requests (nvidia.com/mig-<profile>)


@dataclass(frozen=True, slots=True)
class MigRequest:
    """The operator's record of the ``nvidia.com/mig.config`` value it set on a node."""

    config: str
    at: float  # when it set the label (unix seconds)
    state_then: str  # the MIG manager's state label at that moment
    seen: bool  # the MIG manager has since reported pending/rebooting for it


@dataclass(frozen=True, slots=True)
class MigNode:
    """A node's MIG facts: NVIDIA's labels, the operator's annotations, what allocatable offers."""

    name: str
    gpu_count: int
    config: str | None  # nvidia.com/mig.config
    state: str | None  # nvidia.com/mig.config.state (written by the MIG manager only)
    current: PerGpu | None  # the committed layout (gpupool.io/mig-layout)
    target: PerGpu | None  # the layout asked for, until committed (gpupool.io/mig-layout-target)
    since: float | None  # when the target was recorded
    previous: str | None  # nvidia.com/mig.config before the operator's change
    request: MigRequest | None
    failed_at: float | None  # last re-layout that failed or timed out
    mig_allocatable: tuple[tuple[str, int], ...]  # nvidia.com/mig-* > 0, sorted
    whole_allocatable: int  # nvidia.com/gpu

    def allocatable_matches(self, layouts: PerGpu) -> bool:
        """Whether allocatable advertises exactly the MIG resources ``layouts`` create."""
        want: dict[str, int] = {}
        for gpu in layouts:
            for profile, n in gpu:
                res = profile.replace("+", ".")
                want[res] = want.get(res, 0) + n
        whole = sum(1 for gpu in layouts if not gpu)
        return dict(self.mig_allocatable) == want and self.whole_allocatable == whole


@dataclass(frozen=True, slots=True)
class ServiceFact:
    """A model's Service as desired, and what exists under its name."""

    pool: str
    model: str
    key: str  # namespace/name
    exists: bool
    owned: bool  # carries an ownerReference to the pool's uid
    matches: bool  # selector, ports, labels and owner as desired
