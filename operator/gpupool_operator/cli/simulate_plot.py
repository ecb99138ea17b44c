"""The ``gpupool simulate`` timeline as a PNG (matplotlib, Agg backend: no display needed).

One row for the arrivals, one per policy (replicas per shape, stacked; the queue on the right
axis), and one for the dollars spent so far. Kept out of ``gpupool_operator.sim`` because it
writes a file; matplotlib is imported only when a plot is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate
from pathlib import Path

from gpupool_operator.sim.results import RunResult
from gpupool_operator.sim.scenario import Scenario
from gpupool_operator.sim.trace import Trace

__all__ = ["plot_timeline"]


def plot_timeline(results: Sequence[RunResult], scenario: Scenario, trace: Trace, path: Path,
                  title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    shapes = sorted({k for r in results for k, v in r.timeline.replicas.items() if any(v)})
    colours = {k: plt.get_cmap("tab10")(i % 10) for i, k in enumerate(shapes)}
    rows = len(results) + 2
    fig, axes = plt.subplots(rows, 1, figsize=(12, 1.55 * rows + 0.8), sharex=True)
    first = results[0].timeline
    minutes = [t / 60 for t in first.t]
    axes[0].fill_between(minutes, first.arrivals, step="post", color="0.35", linewidth=0)
    axes[0].set_ylabel("req/s")
    axes[0].set_title(title or f"{scenario.model} on {trace.name}, pod start {scenario.config.pod_start_s:g} s",
                      fontsize=10, loc="left")
    for ax, r in zip(axes[1:-1], results, strict=False):
        tl = r.timeline
        xs = [t / 60 for t in tl.t]
        used = [k for k in shapes if any(tl.replicas.get(k, ()))]
        if used:
            ax.stackplot(xs, [tl.replicas[k] for k in used], colors=[colours[k] for k in used], step="post",
                         linewidth=0)
        ax.set_ylabel("replicas")
        ax.set_title(f"{r.policy}: {100 * r.within_objective:.2f}% within objective, ${r.usd:.2f}, "
                     f"{r.scale_events_per_hour:.0f} scale events/h", fontsize=8, loc="left", pad=2)
        twin = ax.twinx()
        twin.plot(xs, tl.queue, color="crimson", linewidth=0.6, alpha=0.7)
        twin.set_ylabel("queue", color="crimson", fontsize=8)
        twin.tick_params(axis="y", labelsize=7, colors="crimson")
    cost = axes[-1]
    for r in results:
        tl = r.timeline
        step = (tl.t[1] - tl.t[0]) if len(tl.t) > 1 else 1.0
        cost.plot([t / 60 for t in tl.t], list(accumulate(u * step / 3600 for u in tl.usd_per_hour)),
                  label=r.policy, linewidth=1)
    cost.set_ylabel("$ so far")
    cost.set_xlabel("minutes")
    cost.legend(fontsize=7, ncol=min(5, len(results)), loc="upper left")
    handles = [Patch(color=colours[k]) for k in shapes]
    fig.legend(handles, shapes, loc="lower center", ncol=min(4, len(shapes)), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.018))
    if trace.attribution:
        fig.text(0.01, 0.004, f"Trace: {trace.attribution}", fontsize=6, color="0.4")
    fig.tight_layout(rect=(0, 0.045, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
