"""The inventory snapshot: what the cluster has and what already runs on it, as plain frozen data.

Built by the adapters from Node and Pod objects (GFD labels, allocatable, the MIG layout
annotation, bound pods); consumed by the solvers. Nothing here talks to Kubernetes. Like Kueue's
cache snapshot, it is immutable, so one scheduling cycle sees one consistent cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from gpupool_operator.core.cost import PriceTier
from gpupool_operator.core.mig import Placement
from gpupool_operator.core.taints import Taint


class MigStrategy(StrEnum):
    """The ``nvidia.com/mig.strategy`` label: how the device plugin exposes MIG instances."""

    NONE = "none"
    SINGLE = "single"
    MIXED = "mixed"


@dataclass(frozen=True, slots=True)
class Gpu:
    """One physical GPU. ``layout`` is ``None`` when MIG is disabled (a whole GPU).

    ``unusable`` says why no new work may go onto it, when none may: the device plugin does not
    offer it (allocatable is short of what the labels describe), or a pending MIG change will
    re-lay it. ``withheld`` lists instances of its layout the device plugin does not offer (they
    exist on paper, not in allocatable). Work already running on it is kept either way.
    """

    index: int
    layout: Placement | None = None
    unusable: str = ""
    withheld: Placement = ()


@dataclass(frozen=True, slots=True)
class Holding:
    """What one bound pod holds on a node.

    ``owner`` is the demand key (``namespace/pool``) for our own replicas, ``None`` for anyone
    else's pods (they are immovable to us). GPU holdings name the GPU indices; a MIG holding names
    the GPU index and the instance ``(profile, start)`` it sits on.
    """

    pod: str
    owner: str | None = None
    gpus: tuple[int, ...] = ()
    instance: tuple[int, str, int] | None = None  # (gpu index, profile, start slot)
    cpu_millis: int = 0
    memory_mib: int = 0


@dataclass(frozen=True, slots=True)
class Node:
    """A schedulable node as the placement engine sees it.

    ``product`` is a catalog key, or ``None`` for CPU-only nodes and for GPUs the catalog does not
    know (then ``product_label`` and ``gpu_memory_mib`` still describe them and they are used as
    whole, non-MIG GPUs). ``mig_ready`` is false while NVIDIA's MIG manager is reconfiguring the
    node (``nvidia.com/mig.config.state`` pending/rebooting/failed): nothing new goes onto its MIG
    instances until it reports success.
    """

    name: str
    cpu_millis: int
    memory_mib: int
    product: str | None = None
    product_label: str = ""
    gpu_memory_mib: int = 0
    gpus: tuple[Gpu, ...] = ()
    mig_strategy: MigStrategy = MigStrategy.NONE
    mig_ready: bool = True
    price_tier: PriceTier = PriceTier.ON_DEMAND
    gpu_price: float = 0.0  # USD per GPU-hour on this node, tier and overrides applied
    holdings: tuple[Holding, ...] = ()
    schedulable: bool = True
    warnings: tuple[str, ...] = ()
    #: Usable memory of a MIG instance per profile, in MiB, as the node reports it
    #: (``nvidia.com/mig-<profile>.memory``): below the profile's name on real drivers, and preferred
    #: over the catalog's figure. Profiles the node does not label use the catalog.
    mig_memory: tuple[tuple[str, int], ...] = ()
    #: The node's ``spec.taints`` (the cordon and not-ready taints also clear ``schedulable``).
    taints: tuple[Taint, ...] = ()
    #: Where allocatable and the GFD labels disagree about the node's GPUs (allocatable wins):
    #: one sentence each, for the operator to report as a Warning event on the node.
    capacity_conflicts: tuple[str, ...] = ()

    @property
    def is_gpu_node(self) -> bool:
        return bool(self.gpus)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The whole cluster at one instant. Nodes are kept sorted by name for determinism."""

    nodes: tuple[Node, ...]
    cpu_price: float = 0.048  # USD per core-hour
    warnings: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        names = [n.name for n in self.nodes]
        if names != sorted(names):
            object.__setattr__(self, "nodes", tuple(sorted(self.nodes, key=lambda n: n.name)))
        if len(set(names)) != len(names):
            raise ValueError("duplicate node names in snapshot")

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def gpu_count(self) -> int:
        return sum(len(n.gpus) for n in self.nodes)
