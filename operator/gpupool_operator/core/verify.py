"""Independent check of a plan against its snapshot and demands: what would be over-committed?

Written separately from the solvers (it shares no state code with them) so that tests, scenario
files and the operator itself (before applying a plan) can ask "is this plan physically possible?"
A purely computational function with no side-effects; returns human-readable problems, empty when
the plan is sound.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from gpupool_operator.core import catalog, mig
from gpupool_operator.core.cost import PriceTier
from gpupool_operator.core.demand import Demand, ShapeKind
from gpupool_operator.core.inventory import Snapshot
from gpupool_operator.core.mig import Placement
from gpupool_operator.core.plan import Plan
from gpupool_operator.core.taints import untolerated

__all__ = ["problems"]


def problems(snapshot: Snapshot, demands: Sequence[Demand], plan: Plan) -> list[str]:
    out: list[str] = []
    nodes = {n.name: n for n in snapshot.nodes}
    by_key = {d.key: d for d in demands}
    stopped = {e.pod for e in plan.evictions}
    kept = {a.pod for a in plan.assignments if a.pod}

    # Final per-GPU layouts.
    layout: dict[tuple[str, int], Placement | None] = {}
    for n in snapshot.nodes:
        for g in n.gpus:
            layout[(n.name, g.index)] = g.layout
    changed: set[tuple[str, int]] = set()
    for c in plan.layout_changes:
        key = (c.node, c.gpu)
        if key not in layout:
            out.append(f"layout change on unknown GPU {c.node}/{c.gpu}")
            continue
        if key in changed:
            out.append(f"two layout changes for {c.node}/{c.gpu}")
        changed.add(key)
        layout[key] = c.after
        if c.after is not None:
            product = catalog.by_key(nodes[c.node].product or "")
            why = _placement_problem(product, c.after)
            if why:
                out.append(f"{c.node}/{c.gpu}: invalid layout {c.after}: {why}")

    # What stays occupied: pods not stopped (foreign ones always).
    whole_used: Counter[tuple[str, int]] = Counter()
    inst_used: Counter[tuple[str, int, str, int]] = Counter()
    cpu_used: Counter[str] = Counter()
    mem_used: Counter[str] = Counter()
    for n in snapshot.nodes:
        for h in n.holdings:
            if h.pod in stopped:
                continue
            if h.owner is not None and h.pod in kept:
                continue  # counted through its assignment below
            cpu_used[n.name] += h.cpu_millis
            mem_used[n.name] += h.memory_mib
            for gi in h.gpus:
                whole_used[(n.name, gi)] += 1
                if (n.name, gi) in changed:
                    out.append(f"{n.name}/{gi}: layout changed under running pod {h.pod}")
            if h.instance is not None:
                gi, prof, start = h.instance
                inst_used[(n.name, gi, prof, start)] += 1
                if (n.name, gi) in changed:
                    out.append(f"{n.name}/{gi}: layout changed under running pod {h.pod}")

    placed: Counter[str] = Counter()
    off_spot: Counter[str] = Counter()
    charged: set[tuple[str, int]] = set()
    for a in plan.assignments:
        placed[a.demand] += 1
        d = by_key.get(a.demand)
        node = nodes.get(a.node)
        if d is None or node is None:
            out.append(f"assignment of unknown model {a.demand} or node {a.node}")
            continue
        if node.price_tier is not PriceTier.SPOT:
            off_spot[a.demand] += 1
        elif not d.allow_spot:
            out.append(f"{a.demand}#{a.replica} on spot node {a.node} but the model forbids spot")
        s = a.shape
        if a.pod is None:  # a new pod must get past kube-scheduler's filters
            refused = untolerated(d.tolerations_for(s.kind), node.taints)
            if refused:
                out.append(f"{a.demand}#{a.replica}: node {a.node} has taint {refused[0].describe()}, "
                           "which its pod does not tolerate")
            if not node.schedulable:
                out.append(f"{a.demand}#{a.replica}: new replica on unschedulable node {a.node}")
            node_gpus = {x.index: x for x in node.gpus}
            for gi in a.gpus:
                spec = node_gpus.get(gi)
                if spec is not None and spec.unusable:
                    out.append(f"{a.demand}#{a.replica}: new replica on {a.node}/{gi}, which takes no new work "
                               f"({spec.unusable})")
                if spec is not None and s.kind is ShapeKind.MIG and (s.profile, a.start) in spec.withheld:
                    out.append(f"{a.demand}#{a.replica}: {s.profile}@{a.start} on {a.node}/{gi} is not offered "
                               "by the device plugin")
        if s.kind is ShapeKind.CPU:
            cpu_used[a.node] += s.cpu_millis
            mem_used[a.node] += s.memory_mib
            if s.memory_mib < d.memory_mib and not any(acc.host_memory_mib for acc in d.accelerators):
                out.append(f"{a.demand}#{a.replica}: {s.memory_mib} MiB host memory < {d.memory_mib} needed")
            continue
        if (node.product or node.product_label) != s.product:
            out.append(f"{a.demand}#{a.replica}: shape {s.describe()} on a {node.product} node")
        if s.kind is ShapeKind.GPU:
            if len(a.gpus) != s.gpus or len(set(a.gpus)) != s.gpus:
                out.append(f"{a.demand}#{a.replica}: {s.gpus} GPUs wanted, got {a.gpus}")
            if node.gpu_memory_mib * s.gpus < d.memory_mib:
                out.append(f"{a.demand}#{a.replica}: {s.gpus} x {node.gpu_memory_mib} MiB < {d.memory_mib} MiB")
            if math.ceil(d.memory_mib / max(1, d.tensor_parallel)) > node.gpu_memory_mib:
                out.append(f"{a.demand}#{a.replica}: per-GPU memory exceeds a {node.product}")
            for gi in a.gpus:
                key = (a.node, gi)
                if key not in layout:
                    out.append(f"{a.demand}#{a.replica}: no GPU {gi} on {a.node}")
                    continue
                whole_used[key] += 1
                charged.add(key)
                if layout[key] is not None:
                    out.append(f"{a.demand}#{a.replica}: whole GPU {a.node}/{gi} still has MIG layout")
            continue
        # MIG
        product = catalog.by_key(s.product)
        instance = product.profile(s.profile)
        usable = dict(node.mig_memory).get(s.profile, instance.memory_mib)
        if usable < d.memory_mib:
            out.append(f"{a.demand}#{a.replica}: {s.profile} has {usable} MiB < {d.memory_mib}")
        if len(a.gpus) != 1 or a.start is None:
            out.append(f"{a.demand}#{a.replica}: MIG assignment needs one GPU and a start slot")
            continue
        key = (a.node, a.gpus[0])
        charged.add(key)
        current = layout.get(key)
        if current is None or (s.profile, a.start) not in current:
            out.append(f"{a.demand}#{a.replica}: no {s.profile}@{a.start} instance on {a.node}/{a.gpus[0]}")
        inst_used[(a.node, a.gpus[0], s.profile, a.start)] += 1

    for (node_name, gi), holders in whole_used.items():
        if holders > 1:
            out.append(f"GPU {node_name}/{gi} given to {holders} holders")
        if any(k[0] == node_name and k[1] == gi for k in inst_used):
            out.append(f"GPU {node_name}/{gi} used whole and as MIG instances")
    for k, holders in inst_used.items():
        if holders > 1:
            out.append(f"MIG instance {k} given to {holders} holders")
    for name, used in cpu_used.items():
        if used > nodes[name].cpu_millis:
            out.append(f"{name}: {used}m CPU committed > {nodes[name].cpu_millis}m allocatable")
    for name, used in mem_used.items():
        if used > nodes[name].memory_mib:
            out.append(f"{name}: {used} MiB memory committed > {nodes[name].memory_mib} MiB")

    unplaced = Counter({u.demand: u.count for u in plan.unplaced})
    for d in demands:
        if placed[d.key] + unplaced[d.key] != d.replicas:
            out.append(f"{d.key}: {placed[d.key]} placed + {unplaced[d.key]} unplaced != {d.replicas} wanted")
        if d.allow_spot and placed[d.key] >= d.min_off_spot > off_spot[d.key]:
            out.append(f"{d.key}: only {off_spot[d.key]} replicas off spot, {d.min_off_spot} required")

    # Cost: every GPU holding one of our replicas at its full price, plus CPU cores.
    prices = {(n.name, g.index): n.gpu_price for n in snapshot.nodes for g in n.gpus}
    cpu = sum(snapshot.cpu_price * a.shape.cpu_millis / 1000 for a in plan.assignments
              if a.shape.kind is ShapeKind.CPU)
    expected = sum(prices[k] for k in charged) + cpu
    if abs(expected - plan.cost_per_hour) > 1e-4 * max(1.0, expected):
        out.append(f"plan says ${plan.cost_per_hour:.4f}/h, its GPUs and cores cost ${expected:.4f}/h")
    return out


def _placement_problem(product: catalog.GpuProduct, placement: Placement) -> str | None:
    counts = dict(mig.placement_counts(placement))
    why = mig.layout_problem(product, counts)
    if why:
        return why
    used = [False] * catalog.MEMORY_SLOTS
    for name, start in placement:
        prof = product.profile(name)
        if start not in prof.starts:
            return f"{name} may not start at slot {start}"
        for s in range(start, start + prof.memory_slots):
            if s >= catalog.MEMORY_SLOTS or used[s]:
                return f"{name}@{start} overlaps another instance"
            used[s] = True
    return None
