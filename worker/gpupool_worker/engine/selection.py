"""Which execution path serves which batch size: the faster one, measured, never assumed.

On a GPU the Triton kernels win at large batches and can lose at small ones, where launch overhead
dominates (CUDA graphs hide much of it, not always all). So the model times its candidate paths
(e.g. ``triton`` and ``eager``, each with or without CUDA graphs) at a few batch sizes during
warm-up, and :func:`pick_paths` keeps, per batch bucket, the fastest; :class:`PathDispatch` then
sends each batch to the path chosen for the smallest measured bucket that holds it. A purely
computational module: the timings are passed in.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["PathDispatch", "pick_paths"]


def pick_paths(seconds: Mapping[int, Mapping[str, float]], *, preferred: str = "",
               within: float = 0.02) -> dict[int, str]:
    """Per batch size, the path with the least seconds per batch. ``preferred`` wins ties, and any
    batch where it is within ``within`` (2 %) of the fastest: timing noise must not flip paths."""
    out: dict[int, str] = {}
    for batch, by_path in sorted(seconds.items()):
        if not by_path:
            raise ValueError(f"no timings for batch {batch}")
        fastest = min(by_path, key=lambda p: (by_path[p], p != preferred))
        if preferred in by_path and by_path[preferred] <= by_path[fastest] * (1 + within):
            fastest = preferred
        out[batch] = fastest
    return out


@dataclass(frozen=True, slots=True)
class PathDispatch:
    """Route a batch of ``rows`` to the path picked for the smallest measured bucket >= rows
    (the largest one beyond the last)."""

    paths: Mapping[str, Callable[..., Any]]
    choice: Mapping[int, str]

    def __post_init__(self) -> None:
        missing = set(self.choice.values()) - set(self.paths)
        if missing or not self.choice:
            raise ValueError(f"choice names paths that do not exist: {sorted(missing)}" if missing
                             else "no choice")

    def path_for(self, rows: int) -> str:
        buckets = sorted(self.choice)
        i = bisect.bisect_left(buckets, rows)
        return self.choice[buckets[min(i, len(buckets) - 1)]]

    def __call__(self, rows: int, *args: Any) -> Any:
        return self.paths[self.path_for(rows)](*args)

    def describe(self) -> str:
        return ", ".join(f"<={b}: {p}" for b, p in sorted(self.choice.items()))
