"""The demo's live view: what the cluster looks like now, drawn from what the API server holds.

Everything shown is read back from the cluster (pool status, pods, nodes, Events), never from the
demo's own bookkeeping, so the view shows what a user would see with ``kubectl``: replicas per pool
and shape, their state, queue depth, inferences per second, $/h and $ per million inferences as
the operator reports them (a dash where nothing measured them), the nodes' MIG layouts and
re-layout states, and the operator's recent Events (placements, scale decisions, MIG changes).

:func:`gather` does the reads; :func:`render` is a pure function from that data to rich
renderables, so it is tested without a cluster.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

__all__ = ["ClusterView", "gather", "progress", "render", "summary_line"]

Obj = Mapping[str, Any]
#: How many of the operator's Events the view keeps (newest first).
EVENT_ROWS = 8


@dataclass(frozen=True)
class ClusterView:
    pools: Sequence[Obj] = ()
    pods: Sequence[Obj] = ()
    nodes: Sequence[Obj] = ()
    events: Sequence[Obj] = ()
    elapsed_s: float = 0.0
    notes: Sequence[str] = field(default_factory=tuple)


def gather(get: Callable[..., Any], namespace: str, elapsed_s: float, notes: Sequence[str] = ()) -> ClusterView:
    """Read the objects the view shows; ``get(*kubectl_args)`` returns parsed ``kubectl get -o json``."""
    return ClusterView(
        pools=get("inferencepools", "-n", namespace)["items"],
        pods=get("pods", "-n", namespace)["items"],
        nodes=get("nodes")["items"],
        events=[e for e in get("events", "-n", namespace)["items"]
                if (e.get("source") or {}).get("component") == "gpupool-operator"
                or e.get("reportingComponent") == "gpupool-operator"],
        elapsed_s=elapsed_s,
        notes=tuple(notes),
    )


def _pod_state(pod: Obj | None) -> str:
    if pod is None:
        return "-"
    if pod["metadata"].get("deletionTimestamp"):
        return "terminating"
    if pod["spec"].get("schedulingGates"):
        return "gated (MIG)"
    if not pod["spec"].get("nodeName"):
        return "pending"
    status = pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", []))
    return "ready" if ready else str(status.get("phase", "?")).lower()


def _money(value: Any, digits: int = 2) -> str:
    if value in (None, ""):
        return "-"
    try:
        return f"{float(value):,.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def _shape(replica: Obj) -> str:
    resource = str(replica.get("resource") or "-").removeprefix("nvidia.com/")
    count = int(replica.get("count") or 1)
    return f"{resource} x{count}" if count > 1 else resource


def _emulated(pod: Obj | None) -> bool:
    return bool(pod) and (pod or {}).get("metadata", {}).get("annotations", {}).get("gpupool.io/engine") == "emulated"


def pools_table(view: ClusterView) -> Table:
    pods = {p["metadata"]["name"]: p for p in view.pods}
    table = Table(title="Pools and replicas", title_justify="left", expand=True)
    for col, justify in (("pool / model", "left"), ("replicas by shape", "left"), ("ready", "right"),
                         ("serving", "right"),
                         ("queue", "right"), ("inf/s", "right"), ("$/h", "right"), ("$/1M inf", "right"),
                         ("condition", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for pool in sorted(view.pools, key=lambda p: p["metadata"]["name"]):
        status = pool.get("status") or {}
        conds = {c["type"]: c for c in status.get("conditions", [])}
        degraded = conds.get("Degraded", {})
        cond = (f"[red]Degraded: {degraded.get('reason', '')}[/]" if degraded.get("status") == "True"
                else "[green]Ready[/]" if conds.get("Ready", {}).get("status") == "True"
                else conds.get("Placed", {}).get("reason", "waiting"))
        table.add_row(f"[bold]{pool['metadata']['name']}[/]", "", f"{status.get('readyReplicas', 0)}/"
                      f"{status.get('desiredReplicas', 0)}", str(status.get("servingReplicas", 0)), "", "",
                      _money(status.get("usdPerHour")),
                      _money(status.get("usdPerMillionInferences"), 4), cond)
        for model in status.get("models", []):
            shapes: Counter[str] = Counter()
            states: Counter[str] = Counter()
            emulated = False
            for r in model.get("replicas", []):
                shapes[_shape(r)] += 1
                pod = pods.get(r.get("pod") or "")
                states[_pod_state(pod)] += 1
                emulated = emulated or _emulated(pod)
            mix = ", ".join(f"{n} x {s}" for s, n in sorted(shapes.items())) or "-"
            if emulated:
                mix += " (emulated GPU)"
            not_ready = ", ".join(f"{n} {s}" for s, n in sorted(states.items()) if s != "ready")
            counts = f"{model.get('readyReplicas', 0)}/{model.get('desiredReplicas', 0)}"
            queue = model.get("queueDepth")
            table.add_row(f"  {model['name']}", mix, counts, str(model.get("servingReplicas", 0)),
                          "-" if queue is None else str(queue),
                          _money(model.get("inferencesPerSecond"), 1), _money(model.get("usdPerHour")),
                          _money(model.get("usdPerMillionInferences"), 4),
                          (model.get("message") or not_ready or "")[:60])
    return table


def nodes_table(view: ClusterView) -> Table:
    """GPU nodes with their MIG layout and re-layout state; CPU and plain nodes summarised."""
    table = Table(title="GPU nodes and MIG layouts", title_justify="left", expand=True)
    for col in ("node", "product", "MIG config", "state", "slices (allocatable)", "replicas"):
        table.add_column(col)
    on_node = Counter(p["spec"].get("nodeName") for p in view.pods if p["spec"].get("nodeName"))
    other = 0
    for node in sorted(view.nodes, key=lambda n: n["metadata"]["name"]):
        labels = node["metadata"].get("labels", {})
        product = labels.get("nvidia.com/gpu.product")
        if not product:
            other += 1
            continue
        alloc = (node.get("status") or {}).get("allocatable", {})
        slices = [f"{k.removeprefix('nvidia.com/mig-')}: {v}" for k, v in sorted(alloc.items())
                  if k.startswith("nvidia.com/mig-") and str(v) != "0"]
        gpus = alloc.get("nvidia.com/gpu")
        if gpus not in (None, "0"):
            slices.insert(0, f"gpu: {gpus}")
        state = labels.get("nvidia.com/mig.config.state", "")
        style = {"success": "green", "failed": "red", "pending": "yellow", "rebooting": "yellow"}.get(state, "")
        table.add_row(node["metadata"]["name"], product, labels.get("nvidia.com/mig.config", "-"),
                      f"[{style}]{state}[/]" if style else state or "-", ", ".join(slices) or "-",
                      str(on_node.get(node["metadata"]["name"], 0)))
    if other:
        table.caption = f"and {other} CPU node(s)"
    return table


def events_table(view: ClusterView) -> Table:
    table = Table(title="What the operator did (Events, newest first)", title_justify="left", expand=True)
    for col in ("age", "reason", "object", "message"):
        table.add_column(col, overflow="fold")

    def stamp(e: Obj) -> str:
        return str(e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp") or "")

    for e in sorted(view.events, key=stamp, reverse=True)[:EVENT_ROWS]:
        warn = e.get("type") == "Warning"
        obj = e.get("involvedObject") or {}
        table.add_row(stamp(e)[11:19] or "-", f"[red]{e.get('reason')}[/]" if warn else str(e.get("reason")),
                      f"{obj.get('kind', '')}/{obj.get('name', '')}", str(e.get("message", ""))[:140])
    return table


def progress(view: ClusterView) -> str:
    """Pools placed, replicas ready and the planned $/h: the line the demo logs when it changes."""
    placed = sum(1 for p in view.pools
                 if any(c["type"] == "Placed" for c in (p.get("status") or {}).get("conditions", [])))
    ready = sum((p.get("status") or {}).get("readyReplicas", 0) for p in view.pools)
    serving = sum((p.get("status") or {}).get("servingReplicas", 0) for p in view.pools)
    want = sum((p.get("status") or {}).get("desiredReplicas", 0) for p in view.pools)
    usd = sum(float((p.get("status") or {}).get("usdPerHour") or 0) for p in view.pools)
    return (f"{placed}/{len(view.pools)} pools placed   {ready}/{want} replicas ready "
            f"({serving} serving, not on KWOK fake nodes)   ${usd:,.2f}/h planned")


def summary_line(view: ClusterView) -> str:
    return f"{view.elapsed_s:5.0f} s   {progress(view)}"


def render(view: ClusterView) -> RenderableType:
    parts: list[RenderableType] = [Text(summary_line(view), style="bold"), pools_table(view), nodes_table(view),
                                   events_table(view)]
    parts += [Text(n, style="dim") for n in view.notes]
    return Group(*parts)
