"""MIG geometry: is a set of GPU instances a valid layout of one GPU, and where does each sit.

A purely computational module with no side effects. Rules (NVIDIA MIG user guide): instances
occupy contiguous memory slots ``[start, start + size)`` at allowed starts, never overlap, use at
most 7 compute slices and at most 7 instances in total, and respect each profile's max count.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping

from gpupool_operator.core.catalog import (
    COMPUTE_SLICES,
    MAX_INSTANCES,
    MEMORY_SLOTS,
    GpuProduct,
    MigProfile,
    by_key,
)

#: (profile name, start slot) for each instance of a layout.
Placement = tuple[tuple[str, int], ...]


def layout_problem(product: GpuProduct, counts: Mapping[str, int]) -> str | None:
    """Say why ``counts`` (profile name -> instances) cannot be one GPU's layout, or ``None`` if it can."""
    if not product.mig_capable:
        return f"{product.key} is not MIG-capable"
    profiles: list[MigProfile] = []
    for name, n in counts.items():
        if n < 0:
            return f"negative count {n} for {name}"
        try:
            prof = product.profile(name)
        except KeyError as err:
            return str(err.args[0])
        if n > prof.max_count:
            return f"{n} x {name} exceeds the maximum of {prof.max_count} per {product.key}"
        profiles += [prof] * n
    if len(profiles) > MAX_INSTANCES:
        return f"{len(profiles)} instances exceed the maximum of {MAX_INSTANCES} per GPU"
    compute = sum(p.compute_slices for p in profiles)
    if compute > COMPUTE_SLICES:
        return f"the instances need {compute} compute slices; a GPU has {COMPUTE_SLICES}"
    memory = sum(p.memory_slots for p in profiles)
    if memory > MEMORY_SLOTS:
        return f"the instances need {memory} memory slots; a GPU has {MEMORY_SLOTS}"
    if place(product, counts) is None:
        return "no arrangement of these instances fits the GPU's allowed start slots without overlap"
    return None


def place(product: GpuProduct, counts: Mapping[str, int]) -> Placement | None:
    """Find start slots for every instance, or ``None`` when the layout is impossible.

    Large instances are placed first and at their *last* allowed start (a 3g at slot 4 rather than 0
    keeps more layouts open, as NVIDIA advises); backtracking makes the answer exact.
    """
    wanted = Counter({name: n for name, n in counts.items() if n > 0})
    order = sorted(
        (product.profile(name) for name in wanted.elements()),
        key=lambda p: (-p.memory_slots, -p.compute_slices, p.name),
    )
    used = [False] * MEMORY_SLOTS
    chosen: list[tuple[str, int]] = []

    def search(i: int) -> bool:
        if i == len(order):
            return True
        prof = order[i]
        for start in sorted(prof.starts, reverse=True):
            span = range(start, start + prof.memory_slots)
            if span.stop > MEMORY_SLOTS or any(used[s] for s in span):
                continue
            for s in span:
                used[s] = True
            chosen.append((prof.name, start))
            if search(i + 1):
                return True
            chosen.pop()
            for s in span:
                used[s] = False
        return False

    return tuple(sorted(chosen, key=lambda x: x[1])) if search(0) else None


# --------------------------------------------------------------------------------------------
# Layout enumeration and layout changes.
#
# A layout is keyed by its canonical counts: a sorted tuple of (profile name, count) pairs with
# positive counts, so it can be hashed, cached and compared. Every function below is cached per
# product key; the catalog is immutable data, so the caches are safe and bounded by its size.
# --------------------------------------------------------------------------------------------

#: Canonical layout key: sorted (profile, count) pairs, counts > 0. ``()`` is an empty MIG GPU.
Counts = tuple[tuple[str, int], ...]


def counts_key(counts: Mapping[str, int]) -> Counts:
    """The canonical, hashable form of a {profile: count} map (zero counts dropped)."""
    return tuple(sorted((name, n) for name, n in counts.items() if n > 0))


def describe(counts: Mapping[str, int] | Counts | None) -> str:
    """Human text for a layout: ``"1x3g.40gb + 2x1g.10gb"``, ``"empty"`` or ``"MIG disabled"``."""
    if counts is None:
        return "MIG disabled"
    items = counts_key(dict(counts)) if not isinstance(counts, tuple) else counts
    items = tuple(sorted(items, key=lambda kv: (-_size_hint(kv[0]), kv[0])))
    return " + ".join(f"{n}x{name}" for name, n in items) or "empty"


def _size_hint(name: str) -> int:
    head = name.split("g.", 1)[0]
    return int(head) if head.isdigit() else 0


@functools.cache
def valid_layouts(product_key: str) -> tuple[Counts, ...]:
    """Every valid layout of one GPU of ``product_key`` (including the empty one), as counts.

    Enumerated once by depth-first search over profiles with cheap pruning (instances, compute
    slices, memory slots), then confirmed by :func:`place`; a few hundred per product at most.
    """
    product = by_key(product_key)
    if not product.mig_capable:
        return ()
    profs = product.mig_profiles
    found: list[Counts] = []

    def dfs(i: int, acc: dict[str, int], inst: int, comp: int, mem: int) -> None:
        if i == len(profs):
            if place(product, acc) is not None:
                found.append(counts_key(acc))
            return
        prof = profs[i]
        n = 0
        while True:
            if n:
                acc[prof.name] = n
            dfs(i + 1, acc, inst + n, comp + n * prof.compute_slices, mem + n * prof.memory_slots)
            n += 1
            if (
                n > prof.max_count
                or inst + n > MAX_INSTANCES
                or comp + n * prof.compute_slices > COMPUTE_SLICES
                or mem + n * prof.memory_slots > MEMORY_SLOTS
            ):
                break
        acc.pop(prof.name, None)

    dfs(0, {}, 0, 0, 0)
    return tuple(sorted(set(found)))


@functools.cache
def _valid_set(product_key: str) -> frozenset[Counts]:
    return frozenset(valid_layouts(product_key))


def is_valid(product: GpuProduct, counts: Mapping[str, int] | Counts) -> bool:
    """Fast validity check through the enumerated set (same answer as ``layout_problem is None``)."""
    key = counts if isinstance(counts, tuple) else counts_key(counts)
    return key in _valid_set(product.key)


@functools.cache
def add(product_key: str, counts: Counts, profile: str, n: int = 1) -> Counts | None:
    """``counts`` plus ``n`` instances of ``profile`` if that is still a valid layout, else ``None``."""
    merged = dict(counts)
    merged[profile] = merged.get(profile, 0) + n
    key = counts_key(merged)
    return key if key in _valid_set(product_key) else None


@functools.cache
def room_for(product_key: str, counts: Counts, profile: str) -> int:
    """How many more ``profile`` instances fit next to ``counts`` (0 when none or invalid)."""
    n = 0
    while add(product_key, counts, profile, n + 1) is not None:
        n += 1
    return n


@functools.cache
def maximal_layouts(product_key: str, profiles: frozenset[str]) -> tuple[Counts, ...]:
    """Valid layouts using only ``profiles`` to which no further instance of them can be added.

    Any packing of those profiles fits in some maximal layout, so a model that chooses among them
    (the exact solver) loses nothing by ignoring the others.
    """
    restricted = [
        c for c in valid_layouts(product_key) if c and all(name in profiles for name, _ in c)
    ]
    return tuple(
        c for c in restricted if all(add(product_key, c, p) is None for p in sorted(profiles))
    )


def fraction(profile: MigProfile) -> float:
    """The neutral price share of one instance: max(compute slices / 7, memory slots / 8)."""
    return max(profile.compute_slices / COMPUTE_SLICES, profile.memory_slots / MEMORY_SLOTS)


def placement_counts(placement: Placement) -> Counts:
    return counts_key(Counter(name for name, _ in placement))


def smallest_change(
    product: GpuProduct, current: Placement, keep: Placement, need: Mapping[str, int]
) -> Placement | None:
    """The valid layout closest to ``current`` that keeps ``keep`` in place and adds ``need``.

    ``current`` is the GPU's present placement, ``keep`` the instances of it that are occupied
    (they must stay at their start slots), ``need`` extra instances wanted on top of ``keep``.
    Distance is the number of instances destroyed plus created; a free current instance of a
    needed profile is reused in place, and free current instances that do not conflict survive.
    Returns ``None`` when no valid layout contains ``keep`` plus ``need``. Exact (exhaustive
    over start slots; a GPU has at most seven instances, so this is tiny).
    """
    return _smallest_change(product.key, tuple(sorted(current)), tuple(sorted(keep)), counts_key(need))


@functools.cache
def _smallest_change(product_key: str, current: Placement, keep: Placement, need: Counts) -> Placement | None:
    product = by_key(product_key)
    cur = Counter(current)
    if any(cur[k] < n for k, n in Counter(keep).items()):
        raise ValueError(f"kept instances {keep} are not all part of the current layout {current}")
    used = [False] * MEMORY_SLOTS
    for name, start in keep:
        for s in range(start, start + product.profile(name).memory_slots):
            if used[s]:
                raise ValueError(f"kept instances {keep} overlap")
            used[s] = True
    todo = sorted(
        (product.profile(name) for name, n in need for _ in range(n)),
        key=lambda p: (-p.memory_slots, -p.compute_slices, p.name),
    )
    spare = list(cur - Counter(keep))  # free current instances, may be kept if compatible
    best: tuple[int, Placement] | None = None
    chosen: list[tuple[str, int]] = list(keep)

    def finish() -> None:
        nonlocal best
        # Retain the largest compatible subset of free current instances (subset brute force).
        base = list(chosen)
        options = [
            inst for inst in spare
            if not any(used[s] for s in range(inst[1], inst[1] + product.profile(inst[0]).memory_slots))
        ]
        for mask in range(1 << len(options), 0, -1):
            subset = [options[i] for i in range(len(options)) if mask - 1 >> i & 1]
            if not _disjoint(product, subset):
                continue
            layout = base + subset
            if layout_problem(product, Counter(n for n, _ in layout)) is not None:
                continue
            cand = tuple(sorted(layout, key=lambda x: (x[1], x[0])))
            dist = sum((Counter(current) - Counter(cand)).values()) + sum((Counter(cand) - Counter(current)).values())
            if best is None or (dist, cand) < best:
                best = (dist, cand)

    def search(i: int, last: tuple[str, int] | None) -> None:
        if i == len(todo):
            finish()
            return
        prof = todo[i]
        for start in sorted(prof.starts, reverse=True):
            if last is not None and last[0] == prof.name and start > last[1]:
                continue  # identical instances: only non-increasing starts (no permutations)
            span = range(start, start + prof.memory_slots)
            if span.stop > MEMORY_SLOTS or any(used[s] for s in span):
                continue
            for s in span:
                used[s] = True
            chosen.append((prof.name, start))
            search(i + 1, (prof.name, start))
            chosen.pop()
            for s in span:
                used[s] = False

    search(0, None)
    return None if best is None else best[1]


def _disjoint(product: GpuProduct, instances: list[tuple[str, int]]) -> bool:
    seen = [False] * MEMORY_SLOTS
    for name, start in instances:
        for s in range(start, start + product.profile(name).memory_slots):
            if seen[s]:
                return False
            seen[s] = True
    return True


def named_layout(product: GpuProduct, config: str) -> tuple[bool, Placement | None]:
    """The layout a well-known mig-parted config name gives every GPU of ``product``:
    ``(True, layout)`` for ``all-disabled`` (``None``: MIG off), ``all-enabled`` (MIG on, no
    instances), ``all-<profile>`` (as many of the profile as fit) and ``all-balanced`` (2x 1g, 1x
    2g, 1x 3g, NVIDIA's default file); ``(False, None)`` for any other name (a custom config)."""
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
            return True, place(product, {ones[0].name: 2, twos[0].name: 1, threes[0].name: 1})
        return False, None
    if config.startswith("all-"):
        prof = product.profile_for_resource(config[4:]) or next(
            (p for p in product.mig_profiles if p.name == config[4:]), None)
        if prof is not None:
            n = room_for(product.key, (), prof.name)
            return True, place(product, {prof.name: n}) if n else None
    return False, None
