"""The exact reference model: a mixed-integer program solved with HiGHS (``highspy``).

Used by tests and benchmarks to measure how far the heuristic is from optimal; never by the
operator's hot path (it is exponential in the worst case). Same inputs, same cost definition as
:func:`gpupool_operator.core.solver.solve`: every GPU that holds a replica costs its full price
per hour, CPU replicas cost their cores; running pods are pinned (the reference places new replicas
around them). It models the Cost strategy without budgets (BinPack, Spread and ``budget`` are
operator policies the heuristic applies on top of cost).

Formulation (aggregated so that identical GPUs are not symmetric copies):

* ``y[g, L]`` GPUs of group ``g`` (same product, price, spot-ness, MIG-ready) given MIG layout
  ``L``, over the *maximal* layouts of the profiles some model accepts on that product (any packing
  fits inside one of them, so nothing is lost);
* ``w[n]`` free GPUs of node ``n`` used whole; ``sum_L y[g, L] + sum_{n in g} w[n] <= free(g)``
  and ``w[n] <= free(n)`` (MIG GPUs may come from any node of the group, so this is exact);
* ``z[d, s, n]`` replicas of model ``d`` on ``t`` whole GPUs of node ``n``: ``sum t z <= w[n]``;
* ``x[d, s, g]`` replicas on MIG profile ``p`` in group ``g``: ``sum x <= sum_L count(L, p) y[g, L]``,
  plus free instances of GPUs pinned by running pods (zero cost when we already pay for them,
  else a binary ``o[f]`` opens that GPU);
* ``c[d, s, n]`` CPU replicas per node within its free cores and memory;
* a binary ``b[d]`` per model with a min-off-spot promise: either fewer than ``min_off_spot``
  replicas in all, or at least that many off spot (exactly what ``verify.problems`` checks);
* ``sum(...) + u[d] = replicas still needed``; objective: price of GPUs used + CPU + a large
  penalty per unplaced replica (so it places as many as possible, then minimises dollars).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import highspy

from gpupool_operator.core import mig
from gpupool_operator.core.demand import Demand, ShapeKind, candidates
from gpupool_operator.core.inventory import Snapshot
from gpupool_operator.core.solver import products_of
from gpupool_operator.core.state import GpuState, GroupKey, MigPolicy, State, Taints
from gpupool_operator.core.taints import admission

__all__ = ["ExactResult", "solve_exact"]


@dataclass(frozen=True, slots=True)
class ExactResult:
    status: str  # "optimal", "time-limit" (best found so far) or a HiGHS status text
    cost_per_hour: float  # cost of the best plan found (unplaced penalty excluded)
    lower_bound: float  # proven lower bound on the cost (penalty excluded)
    unplaced: Mapping[str, int] = field(default_factory=dict)
    shapes: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # model -> shape -> replicas
    variables: int = 0
    constraints: int = 0

    @property
    def optimal(self) -> bool:
        return self.status == "optimal"


class _Lp:
    def __init__(self) -> None:
        self.cost: list[float] = []
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.rows: list[tuple[float, float, list[int], list[float]]] = []

    def var(self, cost: float, upper: float) -> int:
        self.cost.append(cost)
        self.lower.append(0.0)
        self.upper.append(upper)
        return len(self.cost) - 1

    def row(self, lo: float, hi: float, idx: list[int], val: list[float]) -> None:
        if idx:
            self.rows.append((lo, hi, idx, val))


def solve_exact(
    snapshot: Snapshot, demands: Sequence[Demand], time_limit: float = 30.0, mip_gap: float = 1e-6,
    policy: MigPolicy = MigPolicy.ANY,
) -> ExactResult:
    """Solve the placement exactly (within ``mip_gap``) or report the best plan within ``time_limit``.

    Nodes count for a model only where its pods tolerate the taints (GPU and MIG pods with the
    operator's GPU toleration, CPU pods without); ``policy`` ``DISABLED`` forbids re-layouts as the
    heuristic does (free MIG GPUs offer their instances as they are)."""
    st = State.from_snapshot(snapshot, keep=None, policy=policy)
    demands = sorted(demands, key=lambda d: d.key)
    products = products_of(snapshot)
    running: dict[str, int] = {}
    running_off: dict[str, int] = {}
    for spec_node in snapshot.nodes:
        for hold in spec_node.holdings:
            if hold.owner is not None:
                running[hold.owner] = running.get(hold.owner, 0) + 1
                if spec_node.price_tier.value != "spot":
                    running_off[hold.owner] = running_off.get(hold.owner, 0) + 1
    cands = [candidates(d, products)[0] for d in demands]
    inf = highspy.kHighsInf
    lp = _Lp()
    labels: dict[int, tuple[int, str]] = {}  # var -> (demand index, shape text)
    big = 1000.0 * max([s.price for s in st.gpus] + [snapshot.cpu_price * 64, 1.0])
    base_cost = sum(s.price for s in st.gpus if s.charged) + sum(
        snapshot.cpu_price * hold.cpu_millis / 1000
        for spec_node in snapshot.nodes for hold in spec_node.holdings
        if hold.owner is not None and not hold.gpus and hold.instance is None
    )

    # Profiles some model accepts, per product: restricts the layouts enumerated.
    wanted: dict[str, set[str]] = {}
    for cs in cands:
        for c in cs:
            if c.shape.kind is ShapeKind.MIG:
                wanted.setdefault(c.shape.product, set()).add(c.shape.profile)

    cover: list[tuple[list[int], list[float]]] = [([], []) for _ in demands]
    # --- whole GPUs per node, MIG layouts per group
    w: dict[int, int] = {}
    for node in st.nodes:
        if node.free:
            w[node.order] = lp.var(node.gpus[0].price, float(len(node.free)))
    mig_cap: dict[tuple[GroupKey, str], tuple[list[int], list[float]]] = {}
    for key, group in sorted(st.groups.items()):
        members = [n for n in st.nodes if n.group is group and n.free]
        free = sum(len(n.free) for n in members)
        if not free:
            continue
        idx = [w[n.order] for n in members]
        val = [1.0] * len(idx)
        product = key[0]
        if key[3] and product in wanted:
            for layout in mig.maximal_layouts(product, frozenset(wanted[product])):
                y = lp.var(key[1], float(free))
                idx.append(y)
                val.append(1.0)
                for prof, n in layout:
                    cap = mig_cap.setdefault((key, prof), ([], []))
                    cap[0].append(y)
                    cap[1].append(-float(n))
        lp.row(-inf, float(free), idx, val)
    # --- fixed (pinned) MIG GPUs
    fixed_charged: dict[tuple[str, str, bool, Taints], int] = {}
    fixed_open: list[tuple[int, dict[str, int], str, bool, Taints]] = []  # (o, free counts, product, spot, taints)
    for slot in st.gpus:
        if slot.state is not GpuState.FIXED:
            continue
        counts = {p: len(s) for p, s in slot.fixed_free.items() if s}
        if not counts:
            continue
        if slot.charged:
            for p, n in counts.items():
                k = (slot.product, p, slot.spot, slot.taints)
                fixed_charged[k] = fixed_charged.get(k, 0) + n
        else:
            fixed_open.append((lp.var(slot.price, 1.0), counts, slot.product, slot.spot, slot.taints))
    fixed_rows: dict[tuple[str, str, bool, Taints], tuple[list[int], list[float]]] = {}
    open_rows: dict[tuple[int, str], tuple[list[int], list[float]]] = {}

    off_spot: list[list[int]] = [[] for _ in demands]

    def add_cover(di: int, var: int, text: str, spot: bool) -> None:
        labels[var] = (di, text)
        cover[di][0].append(var)
        cover[di][1].append(1.0)
        if not spot:
            off_spot[di].append(var)

    node_whole: dict[int, tuple[list[int], list[float]]] = {}
    cpu_rows: dict[int, tuple[list[int], list[float], list[float]]] = {}
    for di, d in enumerate(demands):
        gpu_ok = {t for t in st.taint_sets if admission(d.tolerations_for(ShapeKind.GPU), t) is not None}
        cpu_ok = {t for t in st.taint_sets if admission(d.tolerations_for(ShapeKind.CPU), t) is not None}
        for c in cands[di]:
            s = c.shape
            text = s.describe()
            if s.kind is ShapeKind.GPU:
                for node in st.nodes:
                    if not node.free or node.gpus[0].product != s.product or len(node.free) < s.gpus:
                        continue
                    if node.spec.taints not in gpu_ok:
                        continue
                    if node.gpus[0].spot and not d.allow_spot:
                        continue
                    z = lp.var(0.0, float(len(node.free) // s.gpus))
                    add_cover(di, z, text, node.gpus[0].spot)
                    row = node_whole.setdefault(node.order, ([], []))
                    row[0].append(z)
                    row[1].append(float(s.gpus))
            elif s.kind is ShapeKind.MIG:
                for (key, prof), _cap in mig_cap.items():
                    if (key[0] != s.product or prof != s.profile or (key[2] and not d.allow_spot)
                            or key[4] not in gpu_ok):
                        continue
                    x = lp.var(0.0, inf)
                    add_cover(di, x, text, key[2])
                    _cap[0].append(x)
                    _cap[1].append(1.0)
                for (product, prof, spot, taints), n in fixed_charged.items():
                    if product != s.product or prof != s.profile or (spot and not d.allow_spot) or taints not in gpu_ok:
                        continue
                    x = lp.var(0.0, float(n))
                    add_cover(di, x, text, spot)
                    fr = fixed_rows.setdefault((product, prof, spot, taints), ([], []))
                    fr[0].append(x)
                    fr[1].append(1.0)
                for o, counts, product, spot, taints in fixed_open:
                    if (product != s.product or s.profile not in counts or (spot and not d.allow_spot)
                            or taints not in gpu_ok):
                        continue
                    x = lp.var(0.0, float(counts[s.profile]))
                    add_cover(di, x, text, spot)
                    orow = open_rows.setdefault((o, s.profile), ([], []))
                    orow[0].append(x)
                    orow[1].append(1.0)
            else:
                price = snapshot.cpu_price * s.cpu_millis / 1000
                for node in st.cpu_nodes:
                    if node.cpu_free < s.cpu_millis or node.mem_free < s.memory_mib:
                        continue
                    if (node.spec.price_tier.value == "spot" and not d.allow_spot) or node.spec.taints not in cpu_ok:
                        continue
                    cvar = lp.var(price, float(node.cpu_free // max(1, s.cpu_millis)))
                    add_cover(di, cvar, text, node.spec.price_tier.value == "spot")
                    crow = cpu_rows.setdefault(node.order, ([], [], []))
                    crow[0].append(cvar)
                    crow[1].append(float(s.cpu_millis))
                    crow[2].append(float(s.memory_mib))
    for order, (idx, val) in node_whole.items():
        lp.row(-inf, 0.0, [*idx, w[order]], [*val, -1.0])
    for idx, val in mig_cap.values():
        lp.row(-inf, 0.0, idx, val)
    for k, (idx, val) in fixed_rows.items():
        lp.row(-inf, float(fixed_charged[k]), idx, val)
    for (o, prof), (idx, val) in open_rows.items():
        n = next(cnt for ov, cnt, _, _, _ in fixed_open if ov == o)[prof]
        lp.row(-inf, 0.0, [*idx, o], [*val, -float(n)])
    for order, (idx, cpu, mem) in cpu_rows.items():
        node = st.nodes[order]
        lp.row(-inf, float(node.cpu_free), idx, cpu)
        lp.row(-inf, float(node.mem_free), idx, mem)
    unplaced_vars: list[int] = []
    for di, d in enumerate(demands):
        need = max(0, d.replicas - running.get(d.key, 0))
        u = lp.var(big, float(need))
        unplaced_vars.append(u)
        idx, val = cover[di]
        lp.row(float(need), float(need), [*idx, u], [*val, 1.0])
        # The promise kept off spot, exactly as :func:`~gpupool_operator.core.verify.problems`
        # checks it: a model with at least ``min_off_spot`` replicas placed has that many off spot.
        # Binary ``b``: 0 = the model stays below ``min_off_spot`` replicas, 1 = the promise holds.
        have, have_off, m = running.get(d.key, 0), running_off.get(d.key, 0), d.min_off_spot
        if d.allow_spot and m > have_off and have + need >= m:
            b = lp.var(0.0, 1.0)
            lp.row(-float(have_off), inf, [*off_spot[di], b], [1.0] * len(off_spot[di]) + [-float(m)])
            lp.row(-inf, float(m - 1 - have), [*idx, b], [*val, -float(need + have + 1)])

    h = highspy.Highs()  # type: ignore[no-untyped-call]
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit))
    h.setOptionValue("mip_rel_gap", float(mip_gap))
    h.setOptionValue("threads", 1)
    h.setOptionValue("random_seed", 0)
    model = highspy.HighsLp()
    n = len(lp.cost)
    model.num_col_ = n
    model.num_row_ = len(lp.rows)
    model.col_cost_ = lp.cost
    model.col_lower_ = lp.lower
    model.col_upper_ = lp.upper
    model.row_lower_ = [r[0] for r in lp.rows]
    model.row_upper_ = [r[1] for r in lp.rows]
    starts = [0]
    index: list[int] = []
    value: list[float] = []
    for _lo, _hi, ridx, rval in lp.rows:
        index += ridx
        value += rval
        starts.append(len(index))
    model.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    model.a_matrix_.start_ = starts
    model.a_matrix_.index_ = index
    model.a_matrix_.value_ = value
    model.a_matrix_.num_col_ = n
    model.a_matrix_.num_row_ = len(lp.rows)
    model.integrality_ = [highspy.HighsVarType.kInteger] * n
    h.passModel(model)
    h.run()
    status = h.getModelStatus()
    text = h.modelStatusToString(status)
    info = h.getInfo()
    if status == highspy.HighsModelStatus.kOptimal:
        label = "optimal"
    elif status == highspy.HighsModelStatus.kTimeLimit:
        label = "time-limit"
    else:
        label = text
    if info.primal_solution_status == 0:  # no feasible solution (cannot happen: u is a slack)
        return ExactResult(label, float("inf"), 0.0, variables=n, constraints=len(lp.rows))
    sol = list(h.getSolution().col_value)
    unplaced = {demands[i].key: round(sol[u]) for i, u in enumerate(unplaced_vars) if round(sol[u])}
    penalty = big * sum(unplaced.values())
    cost = float(info.objective_function_value) - penalty + base_cost
    bound = float(info.mip_dual_bound) - penalty + base_cost
    shapes: dict[str, dict[str, int]] = {}
    for var, (di, text_) in labels.items():
        used = round(sol[var])
        if used:
            per = shapes.setdefault(demands[di].key, {})
            per[text_] = per.get(text_, 0) + used
    return ExactResult(label, round(cost, 6), round(min(bound, cost), 6), unplaced, shapes, n, len(lp.rows))
