"""MIG geometry: is a set of GPU instances a valid layout of one GPU, and where does each sit.

A purely computational module with no side effects. Rules (NVIDIA MIG user guide): instances
occupy contiguous memory slots ``[start, start + size)`` at allowed starts, never overlap, use at
most 7 compute slices and at most 7 instances in total, and respect each profile's max count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from gpupool_operator.core.catalog import COMPUTE_SLICES, MAX_INSTANCES, MEMORY_SLOTS, GpuProduct, MigProfile

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
