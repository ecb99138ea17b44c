"""The solver's working copy of a snapshot: mutable GPU and node state with fast capacity indexes.

Private to the solvers. A :class:`State` is built once per cycle from an immutable
:class:`~gpupool_operator.core.inventory.Snapshot`; every mutation goes through a method that keeps
the indexes in step, so the placement loop never scans all GPUs:

* free whole GPUs are indexed per *group* (product, price, spot, MIG-ready, taints) in buckets by
  how many free GPUs a node has, so "best-fit node with >= t free GPUs" is a heap peek;
* GPUs whose MIG layout is being built are indexed per (product, spot, taints) and profile by their
  current contents, so "an open GPU with room for a 2g.20gb" looks at a few layout keys, not at GPUs;
* fixed MIG GPUs (something immovable already runs on them) are indexed by free instance profile.

A node's taints are part of every index key: a model may only use the keys whose taints its pods
tolerate (:func:`gpupool_operator.core.taints.admission`), and clusters have few distinct taint sets.

Heaps use lazy deletion: an entry is checked against the object's current state when popped.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum

from gpupool_operator.core import catalog, mig
from gpupool_operator.core.cost import PriceTier
from gpupool_operator.core.inventory import Holding, MigStrategy, Node, Snapshot
from gpupool_operator.core.mig import Counts, Placement
from gpupool_operator.core.taints import Taint


class GpuState(Enum):
    FREE = "free"  # nothing runs on it: usable whole, or re-laid out for MIG when the node allows
    WHOLE = "whole"  # used as a whole GPU (by anyone)
    FIXED = "fixed"  # MIG layout pinned by running instances; only its free instances are usable
    PLANNED = "planned"  # MIG layout being built by this plan (content of new instances)
    OFF = "off"  # not usable for new work (node cordoned, MIG reconfiguring, unsupported strategy)


Taints = tuple[Taint, ...]
#: (product, price per GPU-hour, spot, MIG re-layout allowed, the nodes' taints)
GroupKey = tuple[str, float, bool, bool, Taints]


class MigPolicy(Enum):
    """Whether the plan may change MIG layouts (GPUPoolConfig ``spec.mig.policy``).

    ``ANY``: any valid layout; ``DISABLED``: never (existing instances and whole GPUs are still
    used: a free MIG GPU offers its instances as they are); ``ALLOW_LIST``: only to the allowed
    mig-parted configs, node by node (:mod:`gpupool_operator.core.allowlist`), on top of which the
    working state itself changes no layout, exactly as under ``DISABLED``.
    """

    ANY = "Any"
    ALLOW_LIST = "AllowList"
    DISABLED = "Disabled"


class NodeState:
    __slots__ = ("cpu_free", "free", "gpus", "group", "mem_free", "name", "order", "spec")

    def __init__(self, spec: Node, order: int) -> None:
        self.spec = spec
        self.name = spec.name
        self.order = order
        self.cpu_free = spec.cpu_millis
        self.mem_free = spec.memory_mib
        self.gpus: list[GpuSlot] = []
        self.free: list[int] = []  # indexes into self.gpus of FREE GPUs, ascending
        self.group: Group | None = None

    def __lt__(self, other: NodeState) -> bool:
        return self.order < other.order


class GpuSlot:
    __slots__ = (
        "content", "current", "fixed_free", "index", "key", "node", "order", "ours", "price",
        "product", "spot", "state", "taints",
    )

    def __init__(self, node: NodeState, index: int, current: Placement | None, order: int) -> None:
        spec = node.spec
        self.node = node
        self.index = index
        self.order = order
        self.product = spec.product or spec.product_label or "unknown-gpu"
        self.price = spec.gpu_price
        self.spot = spec.price_tier is PriceTier.SPOT
        self.taints: Taints = spec.taints
        self.current = current
        self.state = GpuState.FREE
        self.content: dict[str, int] = {}  # PLANNED: profile -> new instances
        self.key: Counts = ()  # canonical content
        self.fixed_free: dict[str, list[int]] = {}  # FIXED: profile -> free start slots
        self.ours = 0  # replicas of ours on this GPU (kept or planned): charged when > 0

    def __lt__(self, other: GpuSlot) -> bool:
        return self.order < other.order

    @property
    def charged(self) -> bool:
        return self.ours > 0


@dataclass
class Group:
    """Nodes of one (product, price, spot, MIG-ready, taints) kind, bucketed by free GPU count."""

    key: GroupKey
    buckets: list[list[tuple[int, NodeState]]] = field(default_factory=list)
    size: int = 0

    def push(self, node: NodeState) -> None:
        n = len(node.free)
        while len(self.buckets) <= n:
            self.buckets.append([])
        heapq.heappush(self.buckets[n], (node.order, node))

    def best_fit(self, need: int) -> NodeState | None:
        """The node with the fewest free GPUs that still has ``need`` (lowest order on ties)."""
        for n in range(max(need, 1), len(self.buckets)):
            heap = self.buckets[n]
            while heap:
                node = heap[0][1]
                if len(node.free) == n:
                    return node
                heapq.heappop(heap)
        return None


class State:
    """Mutable per-cycle state. Build with :meth:`from_snapshot`."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.nodes: list[NodeState] = []
        self.gpus: list[GpuSlot] = []
        self.groups: dict[GroupKey, Group] = {}
        self.groups_by_product: dict[str, list[Group]] = {}
        # (product, spot, taints) -> profile -> content key -> heap of PLANNED GPUs with that content
        self.rooms: dict[tuple[str, bool, Taints], dict[str, dict[Counts, list[tuple[int, GpuSlot]]]]] = {}
        # (product, profile, spot, charged, taints) -> heap of FIXED GPUs with a free instance of that profile
        self.fixed: dict[tuple[str, str, bool, bool, Taints], list[tuple[int, GpuSlot]]] = {}
        self.cpu_nodes: list[NodeState] = []  # CPU-only nodes first, then GPU nodes; by name
        self.taint_sets: list[Taints] = []  # the distinct node taint sets, sorted
        self.notes: list[str] = []
        self.unknown_products: dict[str, int] = {}
        self.known_products: list[str] = []

    # ----------------------------------------------------------------------------------------
    @classmethod
    def from_snapshot(
        cls, snapshot: Snapshot, keep: set[str] | None = None, policy: MigPolicy = MigPolicy.ANY
    ) -> State:
        """Build the state; holdings of pods in ``keep`` (or of foreign pods) are pinned.

        Holdings of our own pods not in ``keep`` are ignored: those replicas are being re-placed.
        Instances the device plugin withholds count as held by someone else; GPUs marked unusable
        (not offered, or about to be re-laid by a pending MIG change) take no new work. Under
        ``MigPolicy.DISABLED`` no GPU is re-laid: a free MIG GPU offers its instances as they are.
        """
        st = cls(snapshot)
        order = 0
        taint_sets: set[Taints] = set()
        for i, spec in enumerate(snapshot.nodes):
            taint_sets.add(spec.taints)
            node = NodeState(spec, i)
            st.nodes.append(node)
            if spec.product and spec.product not in st.known_products and spec.gpus:
                st.known_products.append(spec.product)
            elif not spec.product and spec.gpus:
                label = spec.product_label or "unknown-gpu"
                st.unknown_products[label] = max(st.unknown_products.get(label, 0), spec.gpu_memory_mib)
            for g in spec.gpus:
                slot = GpuSlot(node, g.index, g.layout, order)
                order += 1
                node.gpus.append(slot)
                st.gpus.append(slot)
            st._pin(node, [h for h in spec.holdings if h.owner is None or keep is None or h.pod in keep])
            st._withhold(node)
        st.known_products.sort()
        st.taint_sets = sorted(taint_sets)
        for node in st.nodes:
            spec = node.spec
            if spec.schedulable:
                st.cpu_nodes.append(node)
            if not node.gpus:
                continue
            product = catalog.by_key(spec.product) if spec.product else None
            mixed = (
                product is not None and product.mig_capable and spec.mig_strategy is MigStrategy.MIXED
                and spec.mig_ready
            )
            mig_ok = mixed and policy is MigPolicy.ANY
            for slot, gpu in zip(node.gpus, spec.gpus, strict=True):
                if gpu.unusable or _unusable(slot, spec, mig_ok or mixed):
                    slot.state = GpuState.OFF
                elif mixed and not mig_ok and slot.state is GpuState.FREE and slot.current is not None:
                    slot.state = GpuState.FIXED  # re-layout forbidden: its instances as they are
                    slot.fixed_free = {}
                    for name, start in slot.current:
                        slot.fixed_free.setdefault(name, []).append(start)
            node.free = [i for i, s in enumerate(node.gpus) if s.state is GpuState.FREE]
            key: GroupKey = (node.gpus[0].product, spec.gpu_price, spec.price_tier is PriceTier.SPOT, mig_ok,
                             spec.taints)
            group = st.groups.get(key)
            if group is None:
                group = st.groups[key] = Group(key)
                st.groups_by_product.setdefault(key[0], []).append(group)
            node.group = group
            group.size += len(node.gpus)
            group.push(node)
            for slot in node.gpus:
                if slot.state is GpuState.FIXED:
                    for prof in slot.fixed_free:
                        st._index_fixed(slot, prof)
        for groups in st.groups_by_product.values():
            groups.sort(key=lambda g: (g.key[1], g.key[2], not g.key[3], g.key[4]))
        st.cpu_nodes.sort(key=lambda n: (bool(n.gpus), n.order))
        return st

    def _pin(self, node: NodeState, holdings: list[Holding]) -> None:
        by_index = {s.index: s for s in node.gpus}
        for h in holdings:
            node.cpu_free -= h.cpu_millis
            node.mem_free -= h.memory_mib
            ours = 1 if h.owner is not None else 0
            for gi in h.gpus:
                slot = by_index.get(gi)
                if slot is not None:
                    slot.state = GpuState.WHOLE
                    slot.ours += ours
            if h.instance is not None:
                gi, prof, start = h.instance
                slot = by_index.get(gi)
                if slot is None:
                    continue
                if slot.state is not GpuState.FIXED:
                    slot.state = GpuState.FIXED
                    slot.fixed_free = {}
                    for name, s in slot.current or ():
                        slot.fixed_free.setdefault(name, []).append(s)
                starts = slot.fixed_free.get(prof, [])
                if start in starts:
                    starts.remove(start)
                slot.ours += ours
        for slot in node.gpus:
            for starts in slot.fixed_free.values():
                starts.sort()

    def _withhold(self, node: NodeState) -> None:
        """Instances the device plugin does not offer are taken, as if by someone else's pod."""
        for slot, gpu in zip(node.gpus, node.spec.gpus, strict=True):
            if not gpu.withheld or slot.current is None:
                continue
            if slot.state is not GpuState.FIXED:
                slot.state = GpuState.FIXED
                slot.fixed_free = {}
                for name, s in slot.current:
                    slot.fixed_free.setdefault(name, []).append(s)
            for name, start in gpu.withheld:
                starts = slot.fixed_free.get(name, [])
                if start in starts:
                    starts.remove(start)

    # ---------------------------------------------------------------- indexes
    def _index_fixed(self, slot: GpuSlot, prof: str) -> None:
        if slot.fixed_free.get(prof):
            heap = self.fixed.setdefault((slot.product, prof, slot.spot, slot.charged, slot.taints), [])
            heapq.heappush(heap, (slot.order, slot))

    def _index_rooms(self, slot: GpuSlot) -> None:
        by_prof = self.rooms.setdefault((slot.product, slot.spot, slot.taints), {})
        for prof in _addable(slot.product, slot.key):
            heapq.heappush(by_prof.setdefault(prof, {}).setdefault(slot.key, []), (slot.order, slot))

    def room(self, product: str, spot: bool, prof: str, taints: Taints = ()) -> GpuSlot | None:
        """The fullest PLANNED GPU with room for one more ``prof`` (best fit; lowest order on ties)."""
        by_key = self.rooms.get((product, spot, taints), {}).get(prof)
        if not by_key:
            return None
        best: tuple[float, Counts, GpuSlot] | None = None
        dead: list[Counts] = []
        for key, heap in by_key.items():
            while heap and (heap[0][1].state is not GpuState.PLANNED or heap[0][1].key != key):
                heapq.heappop(heap)
            if not heap:
                dead.append(key)
                continue
            fill = _fill(product, key)
            if best is None or (-fill, key) < (-best[0], best[1]):
                best = (fill, key, heap[0][1])
        for key in dead:
            del by_key[key]
        return None if best is None else best[2]

    def fixed_room(self, product: str, spot: bool, prof: str, charged: bool, taints: Taints = ()) -> GpuSlot | None:
        """The first FIXED GPU (charged to us or not) with a free ``prof`` instance."""
        heap = self.fixed.get((product, prof, spot, charged, taints))
        while heap:
            slot = heap[0][1]
            if slot.state is GpuState.FIXED and slot.fixed_free.get(prof) and slot.charged == charged:
                return slot
            heapq.heappop(heap)
        return None

    # ---------------------------------------------------------------- mutations
    def take_free(self, node: NodeState, slot: GpuSlot) -> None:
        node.free.remove(node.gpus.index(slot))
        assert node.group is not None
        node.group.push(node)

    def release_free(self, slot: GpuSlot) -> None:
        node = slot.node
        slot.state = GpuState.FREE
        slot.content = {}
        slot.key = ()
        index = node.gpus.index(slot)
        assert index not in node.free, f"{node.name}/{slot.index} released twice"
        node.free.append(index)
        node.free.sort()
        assert node.group is not None
        node.group.push(node)

    def add_content(self, slot: GpuSlot, prof: str, n: int = 1) -> None:
        slot.content[prof] = slot.content.get(prof, 0) + n
        slot.key = mig.counts_key(slot.content)
        slot.ours += n
        self._index_rooms(slot)

    def remove_content(self, slot: GpuSlot, prof: str) -> None:
        slot.content[prof] -= 1
        if not slot.content[prof]:
            del slot.content[prof]
        slot.key = mig.counts_key(slot.content)
        slot.ours -= 1
        if slot.ours == 0 and not slot.content:
            self.release_free(slot)
        else:
            self._index_rooms(slot)

    def take_fixed(self, slot: GpuSlot, prof: str) -> int:
        start = slot.fixed_free[prof].pop(0)
        slot.ours += 1
        if slot.ours == 1:  # now charged to us: index its free instances as zero-cost rooms
            for name in slot.fixed_free:
                self._index_fixed(slot, name)
        return start

    def return_fixed(self, slot: GpuSlot, prof: str, start: int) -> None:
        slot.fixed_free.setdefault(prof, []).append(start)
        slot.fixed_free[prof].sort()
        slot.ours -= 1
        for name in slot.fixed_free:
            self._index_fixed(slot, name)

    def cpu_fit(self, millis: int, mem: int, spot_ok: bool, admit: dict[Taints, int] | None = None
                ) -> Iterator[NodeState]:
        """Nodes with room for ``millis`` and ``mem``, CPU-only nodes first. With ``admit`` (taint
        set -> untolerated soft taints; see :func:`~gpupool_operator.core.taints.admission`), only
        nodes whose taints the pod tolerates, those it tolerates fully first."""
        later = admit is not None and any(admit.values())
        for node in self.cpu_nodes:
            if node.cpu_free >= millis and node.mem_free >= mem and (
                spot_ok or node.spec.price_tier is not PriceTier.SPOT
            ):
                if admit is None:
                    yield node
                    continue
                soft = admit.get(node.spec.taints)
                if soft == 0:
                    yield node
        if later:
            assert admit is not None
            for soft_level in sorted({v for v in admit.values() if v}):
                for node in self.cpu_nodes:
                    if (admit.get(node.spec.taints) == soft_level and node.cpu_free >= millis
                            and node.mem_free >= mem and (spot_ok or node.spec.price_tier is not PriceTier.SPOT)):
                        yield node


def _unusable(slot: GpuSlot, spec: Node, mig_ok: bool) -> bool:
    """Whether new work must stay off this GPU (running work on it is kept regardless)."""
    is_mig = slot.current is not None
    if not spec.schedulable or (is_mig and not spec.mig_ready):
        return True  # cordoned, or NVIDIA's MIG manager is still applying a layout
    if is_mig and spec.mig_strategy is MigStrategy.SINGLE:
        return True  # slices show up as nvidia.com/gpu: not addressable per profile
    if slot.state is GpuState.FIXED:
        return spec.mig_strategy is not MigStrategy.MIXED
    return slot.state is GpuState.FREE and is_mig and not mig_ok and spec.mig_strategy is not MigStrategy.NONE


@functools.cache
def _addable(product: str, key: Counts) -> tuple[str, ...]:
    """Profiles of ``product`` that still fit next to ``key`` (memoised: the catalog is constant)."""
    prod = catalog.by_key(product)
    return tuple(p.name for p in prod.mig_profiles if mig.add(product, key, p.name) is not None)


@functools.cache
def _fill(product: str, key: Counts) -> float:
    """How much of a GPU ``key`` occupies, in neutral shares."""
    prod = catalog.by_key(product)
    return sum(mig.fraction(prod.profile(name)) * n for name, n in key)
