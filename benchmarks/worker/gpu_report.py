"""How bench_gpu's figures are compared and priced, kept apart so they are checked on a CPU.

- Every engine comparison is at equal precision: Triton kernels bf16 against eager bf16, never
  against eager fp32 (that mixes the kernels' gain with the precision's).
- $ per million inferences on a MIG slice comes from a throughput measured on that slice; where
  none was, it is modelled as the whole GPU's throughput times the slice's compute share, and
  labelled so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["equal_precision", "slice_per_million"]

GOAL_LARGE_BATCH = 1.3  # Triton kernels vs eager at batch >= 32, same precision
LARGE_BATCH = 32


def equal_precision(rows: Iterable[Mapping[str, Any]], *, engine: str = "triton",
                    baseline: str = "eager") -> list[dict[str, Any]]:
    """``engine`` vs ``baseline`` at each (precision, batch) both were measured at, with the goal
    each ratio answers to: at batch >= 32 at least 1.3x, at batch 1 never slower (>= 1.0x)."""
    by_key = {(r["engine"], r["precision"], r["batch"]): r for r in rows}
    out = []
    for (eng, precision, batch), row in sorted(by_key.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        base = by_key.get((baseline, precision, batch))
        if eng != engine or base is None:
            continue
        ratio = row["inferences_per_s"] / base["inferences_per_s"]
        goal = GOAL_LARGE_BATCH if batch >= LARGE_BATCH else 1.0 if batch == 1 else None
        out.append({"precision": precision, "batch": batch, "ratio": ratio, "goal": goal,
                    "met": None if goal is None else ratio >= goal})
    return out


def slice_per_million(price_per_hour: float, device_share: float, *, measured_ips: float | None = None,
                      whole_gpu_ips: float | None = None, compute_share: float | None = None) -> tuple[float, str]:
    """USD per million inferences on a slice holding ``device_share`` of a GPU priced
    ``price_per_hour``, and how the throughput behind it was obtained."""
    usd_per_s = price_per_hour * device_share / 3600
    if measured_ips is not None:
        return usd_per_s * 1e6 / measured_ips, "measured on the slice"
    if whole_gpu_ips is None or compute_share is None:
        raise ValueError("no throughput measured on the slice: pass the whole GPU's and the compute share")
    return (usd_per_s * 1e6 / (whole_gpu_ips * compute_share),
            f"modelled from compute share ({compute_share:.3f} of the whole GPU's throughput), not measured")
