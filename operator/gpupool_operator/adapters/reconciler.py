"""The global placement loop: one cycle = snapshot -> core solver -> plan - observed -> writes -> status.

Every pool competes for the same GPUs, so there is one loop for the whole cluster (Kueue's
scheduling cycle), not one per object. Watch events only *poke* it; bursts coalesce into one cycle.
A cycle is idempotent: it derives everything from the store (kept current by the watches and by
write-through of its own writes), so running it twice, or after a crash at any point, converges to
the same objects:

* replica pods have deterministic names (``<pool>-<model>-<n>``, lowest free ``n``), so a create
  retried on a stale view answers 409 instead of duplicating;
* pods are deleted with a UID precondition, so a successor of the same name is never hit;
* MIG re-layouts are an intent on the node (``gpupool.io/mig-layout-target``) executed when safe
  and committed when the MIG manager reports success, each step readable after a restart;
* status is written only when it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gpupool_operator.adapters import metrics, miglayout, names
from gpupool_operator.adapters.demands import (
    MinReplicas,
    ParsedPool,
    ReplicaPolicy,
    config_from,
    demands_for,
    parse_pool,
    prices_from,
)
from gpupool_operator.adapters.kube import Kube, KubeError, path_for
from gpupool_operator.adapters.snapshot import SnapshotBuilder, version_token
from gpupool_operator.adapters.status import pool_status, status_differs
from gpupool_operator.adapters.store import Kind, Store
from gpupool_operator.adapters.workloads import WorkerSettings, model_service, pod_is_ready, replica_pod
from gpupool_operator.api import API_VERSION, GPUPoolConfig, InferencePoolStatus, MigLayoutPolicy
from gpupool_operator.core.cost import Prices
from gpupool_operator.core.demand import Demand, ShapeKind
from gpupool_operator.core.inventory import Holding, Node, Snapshot
from gpupool_operator.core.plan import Assignment, Plan, Unplaced
from gpupool_operator.core.solver import Options, Planner

__all__ = ["CycleReport", "OperatorSettings", "Reconciler"]

log = logging.getLogger("gpupool.reconciler")
Obj = dict[str, Any]
POOLS_PATH = f"/apis/{API_VERSION}/inferencepools"
CONFIGS_PATH = f"/apis/{API_VERSION}/gpupoolconfigs"


@dataclass(frozen=True)
class OperatorSettings:
    """Everything the loop needs to know that is not in the cluster."""

    namespace: str = "gpupool-system"
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    mig_config_map: str = "gpupool-mig-parted-config"
    debounce_s: float = 0.05
    resync_s: float = 30.0
    failed_cooldown_s: float = 600.0
    unschedulable_grace_s: float = 60.0
    """How long kube-scheduler may refuse a replica before the operator re-plans it elsewhere."""
    move_penalty: float = 0.5
    concurrency: int = 16


@dataclass
class CycleReport:
    """What one cycle did (logged, exported as metrics, asserted by tests and the benchmark)."""

    started: float = 0.0
    seconds: float = 0.0
    plan_seconds: float = 0.0  # snapshot + solve, the CPU part; the rest is API round trips
    requests: int = 0
    created: int = 0
    deleted: int = 0
    ungated: int = 0
    relabeled: int = 0
    statuses: int = 0
    unplaced: int = 0
    cost_per_hour: float = 0.0
    store_version: int = 0
    mode: str = ""
    """How the plan was made: ``full`` solve, ``replan`` (only demands changed since the last plan,
    which is applied), ``kept`` (nothing changed but the last plan being carried out), ``cached``."""


Sig = tuple[str, str, tuple[int, ...], "tuple[int, str, int] | None"]


def _assignment_sig(a: Assignment) -> Sig:
    """What the snapshot's holding of the pod running ``a`` looks like (owner, node, GPUs, instance)."""
    if a.shape.kind is ShapeKind.MIG and a.gpus and a.start is not None:
        return (a.demand, a.node, (), (a.gpus[0], a.shape.profile, a.start))
    return (a.demand, a.node, tuple(sorted(a.gpus)), None)


@dataclass
class _Epoch:
    """Planning since the last full solve: the :class:`Planner` that made it, and what the cluster
    must look like for its plan to count as applied (then only demands can have changed, and a
    re-plan on top of it is what a full solve would keep anyway, in a fraction of the time).

    * ``bases``: every node as parsed without holdings at the full solve (identity compared);
    * ``expected``: our pods the plan runs on, pod -> (demand, node, GPUs, MIG instance);
    * ``foreign``: holdings the plan must work around, not ours (terminating pods included);
    * ``stopped``: our pods the epoch stopped (or found stopping): their holdings are not compared.
    """

    planner: Planner
    bases: dict[str, Node]
    cpu_price: float
    avoid: tuple[int, ...]
    demands: tuple[Demand, ...]
    plan: Plan
    started: float
    expected: dict[str, Sig] = field(default_factory=dict)
    foreign: frozenset[tuple[str, Holding]] = frozenset()
    stopped: set[str] = field(default_factory=set)
    applied: Plan | None = None  # the plan ``expected`` was computed from

    def observe(self, snapshot: Snapshot) -> tuple[dict[str, Sig], frozenset[tuple[str, Holding]]]:
        ours: dict[str, Sig] = {}
        foreign: set[tuple[str, Holding]] = set()
        for node in snapshot.nodes:
            for h in node.holdings:
                if h.pod in self.stopped:
                    continue
                if h.owner is None:
                    foreign.add((node.name, h))
                else:
                    ours[h.pod] = (h.owner, node.name, tuple(sorted(h.gpus)), h.instance)
        return ours, frozenset(foreign)

    def holds(self, snapshot: Snapshot, bases: Mapping[str, Node], avoid: tuple[int, ...]) -> str | None:
        """Why the cluster is not (yet) this epoch's plan applied; ``None`` when it is."""
        if avoid != self.avoid or snapshot.cpu_price != self.cpu_price:
            return "refused capacity or prices changed"
        if len(bases) != len(self.bases) or any(self.bases.get(n) is not b for n, b in bases.items()):
            return "nodes changed"
        ours, foreign = self.observe(snapshot)
        if ours != self.expected:
            return "replicas differ from the plan"
        if foreign != self.foreign:
            return "other pods changed"
        return None

    def carried_out(self, plan: Plan, created: Mapping[tuple[str, int], str], stopped: Iterable[str]) -> Plan:
        """``plan`` once its new replicas run as ``created`` and its evictions are under way."""
        self.stopped.update(e.pod for e in plan.evictions)
        self.stopped.update(stopped)
        self.planner.adopt(created)
        assignments = tuple(
            dataclasses.replace(a, pod=created[(a.demand, a.replica)])
            if a.pod is None and (a.demand, a.replica) in created else a
            for a in plan.assignments
        )
        self.expected = {a.pod: _assignment_sig(a) for a in assignments if a.pod is not None}
        for pod in self.stopped:
            self.expected.pop(pod, None)
        self.plan = self.applied = dataclasses.replace(plan, assignments=assignments, evictions=())
        return self.plan


def _now() -> datetime:
    return datetime.now(UTC)


def _pod_key(pod: Mapping[str, Any]) -> str:
    return f"{pod['metadata'].get('namespace')}/{pod['metadata']['name']}"


def _is_ours(pod: Mapping[str, Any]) -> bool:
    meta = pod.get("metadata", {})
    return (meta.get("labels", {}) or {}).get(names.LABEL_MANAGED_BY) == names.MANAGED_BY and names.ANN_DEMAND in (
        meta.get("annotations", {}) or {}
    )


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the loop asks of one pod, read once per pod object (objects are replaced, not mutated)."""

    key: str  # namespace/name
    ours: bool  # a replica of ours (managed-by label and demand annotation)
    demand: str  # its demand key when ours, else ""
    bound: str | None  # spec.nodeName
    node: str | None  # spec.nodeName, else the node we pinned it to
    deleting: bool
    finished: bool
    gated: bool  # any scheduling gate
    mig_gated: bool  # our MIG gate
    ready: bool
    ident: tuple[str, str, str] | None  # (namespace, pool label, model label) when managed by us
    replica: int | None  # its replica label


def _facts_of(pod: Mapping[str, Any]) -> _Facts:
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {}) or {}
    labels = meta.get("labels", {}) or {}
    ann = meta.get("annotations", {}) or {}
    managed = labels.get(names.LABEL_MANAGED_BY) == names.MANAGED_BY
    ours = managed and names.ANN_DEMAND in ann
    gates = spec.get("schedulingGates") or []
    replica: int | None = None
    if managed:
        with contextlib.suppress(ValueError):
            replica = int(labels.get(names.LABEL_REPLICA, "-1"))
    bound = spec.get("nodeName") or None
    return _Facts(
        key=f"{meta.get('namespace')}/{meta.get('name')}",
        ours=ours,
        demand=str(ann[names.ANN_DEMAND]) if ours else "",
        bound=bound,
        node=bound or ann.get(names.ANN_NODE),
        deleting=bool(meta.get("deletionTimestamp")),
        finished=_finished(pod),
        gated=bool(gates),
        mig_gated=any(g.get("name") == names.MIG_GATE for g in gates),
        ready=pod_is_ready(pod),
        ident=(meta.get("namespace"), labels.get(names.LABEL_POOL, ""), labels.get(names.LABEL_MODEL, ""))
        if managed else None,
        replica=replica,
    )


def _pod_gpus(pod: Mapping[str, Any]) -> set[int]:
    ann = pod.get("metadata", {}).get("annotations", {}) or {}
    out = {int(x) for x in ann.get(names.ANN_GPUS, "").split(",") if x.strip().isdigit()}
    inst = ann.get(names.ANN_MIG_INSTANCE)
    if inst:
        out.add(int(inst.split(":", 1)[0]))
    return out


def _holds_gpu(pod: Mapping[str, Any]) -> bool:
    for c in pod.get("spec", {}).get("containers", []):
        res = c.get("resources", {}) or {}
        for name in {**(res.get("limits") or {}), **(res.get("requests") or {})}:
            if name.startswith("nvidia.com/"):
                return True
    return False


def _finished(pod: Mapping[str, Any]) -> bool:
    return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")


def without_relayouts(plan: Plan, reason: str) -> Plan:
    """``plan`` minus every MIG re-layout, the new replicas that needed one counted as unplaced.

    Enforces a GPUPoolConfig that forbids re-layouts (``mig.policy`` Disabled; AllowList names the
    MIG manager's own configs, which the operator does not map to layouts yet, so it is treated
    the same). The placement core has no "use existing slices only" switch; with one, these
    replicas would be placed elsewhere instead of reported.
    """
    if not plan.layout_changes:
        return plan
    changed = {(c.node, c.gpu) for c in plan.layout_changes}
    kept: list[Assignment] = []
    lost: dict[str, int] = {}
    for a in plan.assignments:
        if a.pod is None and any((a.node, g) in changed for g in a.gpus):
            lost[a.demand] = lost.get(a.demand, 0) + 1
        else:
            kept.append(a)
    unplaced = list(plan.unplaced) + [Unplaced(d, n, reason) for d, n in sorted(lost.items())]
    return dataclasses.replace(plan, assignments=tuple(kept), layout_changes=(), unplaced=tuple(unplaced))


def _parse_time(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        return datetime.strptime(raw, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _phantoms(pod: Mapping[str, Any], node: Mapping[str, Any] | None) -> list[Obj]:
    """Stand-in pods that occupy, on ``node``, every unit of what ``pod`` asked for there."""
    if node is None:
        return []
    name = node["metadata"]["name"]
    limits = dict(pod["spec"]["containers"][0].get("resources", {}).get("limits", {}) or {})
    gpus = int((node["metadata"].get("labels", {}) or {}).get("nvidia.com/gpu.count", "0") or 0)
    alloc = node.get("status", {}).get("allocatable", {}) or {}
    if any(k.startswith("nvidia.com/mig-") for k in limits):
        copies, wanted = max(gpus, 1) * 7, {k: "1" for k in limits if k.startswith("nvidia.com/")}
    elif "nvidia.com/gpu" in limits:
        copies, wanted = 1, {"nvidia.com/gpu": str(gpus)}
    else:
        copies, wanted = 1, {"cpu": str(alloc.get("cpu", "0")), "memory": str(alloc.get("memory", "0"))}
    return [{
        "metadata": {"name": f"refused-{name}-{i}", "namespace": "gpupool-refused"},
        "spec": {"nodeName": name, "containers": [{"resources": {"limits": wanted, "requests": wanted}}]},
        "status": {"phase": "Running"},
    } for i in range(copies)]


def _changed_gpus(current: list[dict[str, int]] | None, target: list[dict[str, int]]) -> set[int]:
    if current is None or len(current) != len(target):
        return set(range(len(target)))
    return {i for i, (a, b) in enumerate(zip(current, target, strict=True)) if a != b}


class Reconciler:
    """Runs placement cycles while this replica leads; ``poke()`` asks for one soon."""

    def __init__(
        self,
        kube: Kube,
        store: Store,
        settings: OperatorSettings,
        policy: ReplicaPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.store = store
        self.settings = settings
        self.policy = policy or MinReplicas()
        self.clock = clock
        self._wake = asyncio.Event()
        self._seeded = False
        self._services: set[str] = set()
        self._mig_doc: tuple[str | None, str | None] | None = None  # (content, resourceVersion)
        self.last_plan: Plan | None = None
        self.last_report: CycleReport | None = None
        self.reports: list[CycleReport] = []
        self.cycles = 0
        self.idle = asyncio.Event()
        self._events: list[tuple[Obj, str, str, str]] = []  # (involvedObject, type, reason, message)
        self._parsed: dict[tuple[Any, Any, bool], ParsedPool] = {}
        # (until, phantom pod): capacity kube-scheduler refused on a node, kept out of plans a while
        self._avoid: list[tuple[float, Obj]] = []
        self._last: tuple[Any, Snapshot, Plan] | None = None  # (inputs, snapshot, plan) of the last solve
        self._full_next = True
        self._status_inputs: dict[str, Any] = {}  # pool -> what its last written status was computed from
        self._snapshots = SnapshotBuilder()
        self._epoch: _Epoch | None = None
        self._config_cache: tuple[Obj | None, GPUPoolConfig, Prices] | None = None
        self._demand_cache: dict[str, tuple[ParsedPool, Any, Any, list[Demand]]] = {}
        self._facts_memo: dict[tuple[Any, Any], tuple[tuple[Any, ...] | None, _Facts]] = {}

    # -- the loop -----------------------------------------------------------------------------
    def poke(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event, is_leader: Callable[[], bool]) -> None:
        """Cycle whenever poked (debounced) or every ``resync_s``, while ``is_leader()``."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.resync_s)
            except TimeoutError:
                self._full_next = True  # the periodic resync always solves afresh (cool-downs expire)
            if stop.is_set():
                break
            if not is_leader():
                self._seeded = False  # a new term starts from a fresh list
                self._full_next = True
                self._epoch = None
                self._wake.clear()
                self.idle.set()
                await asyncio.sleep(0.2)
                continue
            await asyncio.sleep(self.settings.debounce_s)
            self._wake.clear()
            self.idle.clear()
            try:
                if not self._seeded:
                    await self.seed()
                report = await self.cycle()
                self.reports.append(report)
                del self.reports[:-1000]
            except Exception:  # a cycle must never kill the loop: log, back off, retry
                log.exception("placement cycle failed; retrying")
                await asyncio.sleep(1.0)
                self._wake.set()
            finally:
                if not self._wake.is_set():
                    self.idle.set()

    async def seed(self) -> None:
        """List everything once, so the first cycle of a term sees the whole cluster."""
        lists = {
            Kind.NODE: "/api/v1/nodes",
            Kind.POD: "/api/v1/pods",
            Kind.POOL: POOLS_PATH,
            Kind.CONFIG: CONFIGS_PATH,
        }
        for kind, path in lists.items():
            items, version = await self.kube.run(self.kube.list, path)
            self.store.seed(kind, items, version)
        self._seeded = True

    # -- one cycle ----------------------------------------------------------------------------
    async def cycle(self) -> CycleReport:
        started = time.monotonic()
        before = self.kube.total_requests
        report = CycleReport(started=self.clock(), store_version=self.store.version)
        now = self.clock()

        parsed = [self._parse(obj) for obj in self.store.all(Kind.POOL)]
        pools = {f"{p.namespace}/{p.name}": p for p in parsed if p.pool is not None and not p.deleting}
        config, prices = self._config()
        nodes = self.store.all(Kind.NODE)
        pods = self.store.all(Kind.POD)
        demands = self._demands(pools, config)
        desired = {d.key: d.replicas for d in demands}

        self._avoid = [(until, pod) for until, pod in self._avoid if until > now]
        seen_pods = pods + [pod for _, pod in self._avoid]
        avoid_key = tuple(id(p) for _, p in self._avoid)
        incremental = config.spec.mig.policy is MigLayoutPolicy.ANY
        terminating = {f.key for f in map(self._facts, pods) if f.ours and f.deleting}

        def plan_now() -> tuple[Snapshot, Plan, str]:
            return self._plan(nodes, seen_pods, prices, now, demands, avoid_key, incremental, terminating)

        plan_started = time.monotonic()
        inputs = (self.store.placement_version, avoid_key)
        if self._full_next or self._last is None or self._last[0] != inputs or \
                (self._epoch is not None and self._epoch.demands != tuple(demands)):
            snapshot, plan, report.mode = await self.kube.run(plan_now)
            self._last = (inputs, snapshot, plan)
            self._full_next = False
        else:  # nothing the plan depends on changed: the deterministic solver would say the same
            _, snapshot, plan = self._last
            report.mode = "cached"
        report.plan_seconds = time.monotonic() - plan_started
        if config.spec.mig.policy is not MigLayoutPolicy.ANY:
            plan = without_relayouts(plan, f"MIG re-layout is not allowed (GPUPoolConfig mig.policy "
                                           f"{config.spec.mig.policy.value}) and no existing slice is free")
        self.last_plan = plan
        report.unplaced = sum(u.count for u in plan.unplaced)
        report.cost_per_hour = plan.cost_per_hour
        metrics.PLAN_USD_PER_HOUR.set(plan.cost_per_hour)
        metrics.UNPLACED_REPLICAS.set(report.unplaced)

        node_by_name = {n["metadata"]["name"]: n for n in nodes}
        sem = asyncio.Semaphore(self.settings.concurrency)

        async def limited(func: Callable[..., Any], *args: Any) -> Any:
            async with sem:
                return await self.kube.run(func, *args)

        # 1. MIG: commit finished re-layouts, handle failures, execute intents that became safe.
        report.relabeled += await self._drive_mig(node_by_name, pods, limited, now)

        # 2. Stop what the plan no longer wants, lost and finished replicas, and drained ones.
        doomed = self._doomed(plan, pods, node_by_name, snapshot, desired)
        results = await asyncio.gather(*(limited(self._delete_pod, pod) for pod in doomed))
        report.deleted += sum(1 for r in results if r)

        # 3. Record new MIG layout intents (the label follows when the GPUs are free).
        await self._record_intents(plan, node_by_name, limited)
        node_by_name = {n["metadata"]["name"]: n for n in self.store.all(Kind.NODE)}

        # 4. Start new replicas (gated when their GPU is being re-laid out).
        pod_names = self._name_new_replicas(plan, self.store.all(Kind.POD))
        creations = []
        started_for: list[Assignment] = []
        for a in plan.assignments:
            if a.pod is not None:
                continue
            namespace, pool_name, model_name = names.split_demand_key(a.demand)
            entry = pools.get(f"{namespace}/{pool_name}")
            if entry is None or entry.pool is None:
                continue
            node = node_by_name.get(a.node, {})
            gated = self._must_gate(node, a)
            manifest = replica_pod(
                entry.pool, entry.uid, entry.pool.spec.model(model_name), a, pod_names[(a.demand, a.replica)][1],
                (node.get("metadata", {}).get("labels", {}) or {}).get("nvidia.com/gpu.product", ""),
                next((n.gpu_price for n in snapshot.nodes if n.name == a.node), 0.0), gated,
                self.settings.worker,
            )
            creations.append(limited(self._create_pod, manifest))
            started_for.append(a)
        created = await asyncio.gather(*creations)
        report.created += sum(1 for c in created if c)
        applied = self._applied(plan, [(a, pod_names[(a.demand, a.replica)][0])
                                       for a, ok in zip(started_for, created, strict=True) if ok],
                                failed=not all(created), doomed=[_pod_key(p) for p in doomed])
        if self._last is not None and self._last[2] is plan:
            self._last = (self._last[0], self._last[1], applied)

        # 5. Services, one per model.
        await asyncio.gather(*(  # (the ones already made are known here: no thread hop for them)
            limited(self._ensure_service, entry, model.name)
            for entry in pools.values() if entry.pool is not None
            for model in entry.pool.spec.models
            if f"{entry.uid}/{names.service_name(entry.name, model.name)}" not in self._services
        ))

        # 6. Let gated replicas schedule once their node's new layout is in allocatable.
        report.ungated += await self._ungate(self.store.all(Kind.POD), node_by_name, limited)

        # 7. Status of every pool, written only when it changes; one Event per pool with news.
        report.statuses += await self._write_statuses(pools, plan, pod_names, desired, limited)

        report.seconds = time.monotonic() - started
        report.requests = self.kube.total_requests - before
        self.cycles += 1
        self.last_report = report
        metrics.CYCLES.inc()
        metrics.CYCLE_SECONDS.observe(report.seconds)
        metrics.PLAN_SECONDS.observe(report.plan_seconds)
        if report.created or report.deleted or report.relabeled or report.ungated or report.statuses:
            log.info(
                "cycle %d: %.3fs (%s, plan %.3fs), %d requests, created %d, deleted %d, relabeled %d, ungated %d, "
                "statuses %d, unplaced %d, plan %.2f $/h",
                self.cycles, report.seconds, report.mode, report.plan_seconds, report.requests, report.created,
                report.deleted, report.relabeled, report.ungated, report.statuses, report.unplaced,
                report.cost_per_hour,
            )
        return report

    def _parse(self, obj: Obj) -> ParsedPool:
        """Parse a pool once per (uid, generation, deleting): specs change only with the generation."""
        meta = obj.get("metadata", {})
        key = (meta.get("uid"), meta.get("generation"), bool(meta.get("deletionTimestamp")))
        hit = self._parsed.get(key)
        if hit is None:
            hit = self._parsed[key] = parse_pool(obj)
            if len(self._parsed) > 4 * max(len(self.store.objects[Kind.POOL]), 64):
                self._parsed = {key: hit}
        return hit

    def _facts(self, pod: Obj) -> _Facts:
        """:func:`_facts_of` ``pod``, memoised per pod version (:func:`version_token`; no pod object
        is kept alive by the memo; gone pods are pruned now and then)."""
        meta = pod["metadata"]
        key = (meta.get("namespace"), meta.get("name"))
        token = version_token(pod)
        hit = self._facts_memo.get(key)
        if hit is not None and token is not None and hit[0] == token:
            return hit[1]
        facts = _facts_of(pod)
        if hit is None and len(self._facts_memo) > len(self.store.objects[Kind.POD]) + 256:
            live = self.store.objects[Kind.POD]
            self._facts_memo = {k: v for k, v in self._facts_memo.items() if f"{k[0]}/{k[1]}" in live}
        self._facts_memo[key] = (token, facts)
        return facts

    def _config(self) -> tuple[GPUPoolConfig, Prices]:
        """The GPUPoolConfig and its prices, parsed again only when the stored object changes."""
        obj = self.store.get(Kind.CONFIG, "default")
        cached = self._config_cache
        if cached is not None and cached[0] is obj:
            return cached[1], cached[2]
        config, problem = config_from(obj)
        if problem:
            log.warning(problem)
        prices = prices_from(config)
        self._config_cache = (obj, config, prices)
        return config, prices

    def _demands(self, pools: Mapping[str, ParsedPool], config: GPUPoolConfig) -> list[Demand]:
        """:func:`demands_for` every pool, computed again only for a pool whose parse, the config's
        defaults or the replica policy (compared by identity: replace it to change it) changed."""
        defaults = config.spec.defaults
        cache: dict[str, tuple[ParsedPool, Any, Any, list[Demand]]] = {}
        out: list[Demand] = []
        for key, entry in pools.items():
            if entry.pool is None:
                continue
            hit = self._demand_cache.get(key)
            if hit is not None and hit[0] is entry and hit[1] is defaults and hit[2] is self.policy:
                found = hit[3]
            else:
                found = demands_for([entry.pool], self.policy, defaults)
            cache[key] = (entry, defaults, self.policy, found)
            out += found
        self._demand_cache = cache
        return sorted(out, key=lambda d: d.key)

    def _plan(self, nodes: list[Obj], pods: list[Obj], prices: Prices, now: float, demands: list[Demand],
              avoid: tuple[int, ...], incremental: bool, terminating: set[str]) -> tuple[Snapshot, Plan, str]:
        """Snapshot and plan: a re-plan on top of the last plan when the cluster is that plan applied
        and only demands changed (``replan``; ``kept`` when they did not either), else a full solve.

        The full solve also runs every ``resync_s`` at the latest, when the configuration forbids
        MIG re-layouts (the plan is cut after solving, so the planner's view would not be applied),
        and after a cycle that could not carry out its plan.
        """
        snapshot = self._snapshots.build(nodes, pods, prices, now, self.settings.failed_cooldown_s)
        bases = self._snapshots.bases
        epoch = self._epoch
        if epoch is not None and incremental and not self._full_next:
            if time.monotonic() - epoch.started > self.settings.resync_s:
                why: str | None = "periodic full solve"
            else:
                why = epoch.holds(snapshot, bases, avoid)
            if why is None:
                wanted = tuple(demands)
                if wanted == epoch.demands:
                    return snapshot, epoch.plan, "kept"
                plan = epoch.planner.replan(demands)
                epoch.demands, epoch.plan = wanted, plan
                return snapshot, plan, "replan"
            log.debug("full solve: %s", why)
        self._epoch = epoch = None  # its planner's working state goes before the next one is built
        planner = Planner(snapshot, Options(move_penalty=self.settings.move_penalty))
        plan = planner.plan(demands)
        if not incremental:
            self._epoch = None
            return snapshot, plan, "full"
        epoch = _Epoch(planner, dict(bases), snapshot.cpu_price, avoid, tuple(demands), plan, time.monotonic(),
                       stopped=set(terminating))
        epoch.foreign = epoch.observe(snapshot)[1]
        self._epoch = epoch
        return snapshot, plan, "full"

    def _applied(self, plan: Plan, created: list[tuple[Assignment, str]], failed: bool,
                 doomed: list[str]) -> Plan:
        """Tell the epoch what this cycle carried out of ``plan``; returns the plan as now applied."""
        epoch = self._epoch
        if epoch is None or plan is not epoch.plan:
            return plan
        if failed:  # a replica could not be started: plan afresh from what exists
            self._full_next = True
        if plan is epoch.applied and not created and epoch.stopped.issuperset(doomed):
            return plan  # the plan was already applied, and nothing new was carried out
        names_of = {(a.demand, a.replica): f"{names.split_demand_key(a.demand)[0]}/{name}" for a, name in created}
        return epoch.carried_out(plan, names_of, doomed)

    # -- deletions ----------------------------------------------------------------------------
    def _doomed(
        self, plan: Plan, pods: list[Obj], nodes: Mapping[str, Obj], snapshot: Snapshot, desired: Mapping[str, int]
    ) -> list[Obj]:
        by_key = {_pod_key(p): p for p in pods} if plan.evictions else {}
        out: dict[str, Obj] = {}
        for e in plan.evictions:
            pod = by_key.get(e.pod)
            if pod is not None and _is_ours(pod) and not pod["metadata"].get("deletionTimestamp"):
                out[e.pod] = pod
                self._event(pod, "Normal", "Stopping", f"stopping replica on {e.node}: {e.reason}")
        for pod in self._refused(pods, nodes):
            out[_pod_key(pod)] = pod
        schedulable = {n.name for n in snapshot.nodes if n.schedulable}
        ready_elsewhere: dict[str, int] = {}
        draining: list[Obj] = []
        for pod in pods:
            f = self._facts(pod)
            if not f.ours or f.deleting:
                continue
            key, node, demand = f.key, f.node, f.demand
            if f.finished:
                out[key] = pod
                self._event(pod, "Warning", "ReplicaFinished", f"replica {key} ended ({pod['status'].get('phase')})")
            elif node not in nodes:
                out[key] = pod
                self._event(pod, "Warning", "NodeGone", f"node {node} of replica {key} is gone; placing it again")
            elif node not in schedulable:
                draining.append(pod)
            elif f.ready:
                ready_elsewhere[demand] = ready_elsewhere.get(demand, 0) + 1
        for pod in draining:  # make before break: stop a cordoned node's replica once others serve
            demand = pod["metadata"]["annotations"][names.ANN_DEMAND]
            if ready_elsewhere.get(demand, 0) >= desired.get(demand, 0):
                out[_pod_key(pod)] = pod
                self._event(pod, "Normal", "Drained",
                            f"replica moved off unschedulable node {pod['spec'].get('nodeName')}")
        return list(out.values())

    def _refused(self, pods: list[Obj], nodes: Mapping[str, Obj]) -> list[Obj]:
        """Our replicas kube-scheduler has refused for longer than the grace period.

        The plan and the node disagree (capacity held by something the operator cannot see, a
        device plugin that does not advertise what the labels promise): the replica is stopped and
        what it asked for is treated as taken on that node for ``failed_cooldown_s``, so the next
        plan puts it elsewhere (or reports it unplaced) instead of retrying the same node forever.
        """
        now = self.clock()
        out = []
        for pod in pods:
            f = self._facts(pod)
            if not f.ours or f.deleting or f.bound or f.gated:
                continue
            cond = next((c for c in pod.get("status", {}).get("conditions", []) or []
                         if c.get("type") == "PodScheduled"), None)
            if cond is None or cond.get("status") != "False" or cond.get("reason") != "Unschedulable":
                continue
            since = _parse_time(cond.get("lastTransitionTime"))
            waited = now - since if since is not None else 0.0
            if waited < self.settings.unschedulable_grace_s:
                with contextlib.suppress(RuntimeError):
                    asyncio.get_running_loop().call_later(self.settings.unschedulable_grace_s - waited + 0.5, self.poke)
                continue
            node = pod["metadata"]["annotations"].get(names.ANN_NODE, "")
            out.append(pod)
            self._avoid += [(now + self.settings.failed_cooldown_s, p) for p in _phantoms(pod, nodes.get(node))]
            self._event(pod, "Warning", "Unschedulable",
                        f"kube-scheduler refused replica {pod['metadata']['name']} on {node} for {waited:.0f}s "
                        f"({cond.get('message', '')[:200]}); placing it elsewhere")
        return out

    def _delete_pod(self, pod: Obj) -> bool:
        meta = pod["metadata"]
        path = path_for("v1", "pods", meta["name"], meta["namespace"])
        gone = self.kube.delete(path, uid=meta.get("uid"))
        marked = {**pod, "metadata": {**meta, "deletionTimestamp": _now().strftime("%Y-%m-%dT%H:%M:%SZ")}}
        self.store.replace(Kind.POD, marked)  # write-through: terminating until the watch says gone
        return gone

    # -- creations ----------------------------------------------------------------------------
    def _name_new_replicas(self, plan: Plan, pods: list[Obj]) -> dict[tuple[str, int], tuple[str, int]]:
        """(demand, replica) -> (pod name, replica index) of every new replica (no pod yet): the lowest
        free index of its model."""
        used: dict[tuple[str, str, str], set[int]] = {}
        if any(a.pod is None for a in plan.assignments):
            for pod in pods:
                f = self._facts(pod)
                if f.ident is not None and f.replica is not None:
                    used.setdefault(f.ident, set()).add(f.replica)
        out: dict[tuple[str, int], tuple[str, int]] = {}
        for a in plan.assignments:
            if a.pod is not None:
                continue
            namespace, pool, model = names.split_demand_key(a.demand)
            taken = used.setdefault((namespace, names.label_value(pool), model), set())
            n = 0
            while n in taken:
                n += 1
            taken.add(n)
            out[(a.demand, a.replica)] = (names.pod_name(pool, model, n), n)
        return out

    def _must_gate(self, node: Mapping[str, Any], a: Assignment) -> bool:
        current, target = miglayout.node_layouts(node)
        if target is None:
            return False
        return bool(set(a.gpus) & _changed_gpus(current, target))

    def _create_pod(self, manifest: Obj) -> bool:
        meta = manifest["metadata"]
        created = self.kube.create(path_for("v1", "pods", namespace=meta["namespace"]), manifest)
        if created is None:  # the name exists: our view was stale; read it and plan again
            current = self.kube.get(path_for("v1", "pods", meta["name"], meta["namespace"]))
            if current is not None:
                self.store.upsert(Kind.POD, current)
            self.poke()
            return False
        self.store.upsert(Kind.POD, created)
        ann = meta["annotations"]
        where = ann.get(names.ANN_MIG_INSTANCE) or ann.get(names.ANN_GPUS) or "cpu"
        gate = " (gated until the MIG layout is applied)" if manifest["spec"].get("schedulingGates") else ""
        self._event(created, "Normal", "Placed", f"replica {meta['name']} placed on {ann[names.ANN_NODE]} [{where}]"
                    f"{gate} at {ann[names.ANN_USD_PER_HOUR]} $/h")
        return True

    def service_gone(self, service: Mapping[str, Any]) -> None:
        """A Service this operator made was deleted (by hand, say): make it again next cycle.

        Services are created once and remembered (``_services``) so a cycle costs no request per
        model; without this watch a deleted Service would come back only after a restart. A Service
        deleted with its pool has no pool left to recreate it for, so the next cycle skips it.
        """
        meta = service.get("metadata", {})
        for owner in meta.get("ownerReferences") or []:
            key = f"{owner.get('uid')}/{meta.get('name')}"
            if key in self._services:
                self._services.discard(key)
                self.poke()

    def _ensure_service(self, entry: ParsedPool, model: str) -> None:
        assert entry.pool is not None
        manifest = model_service(entry.pool, entry.uid, entry.pool.spec.model(model))
        key = f"{entry.uid}/{manifest['metadata']['name']}"
        if key in self._services:
            return
        self.kube.create(path_for("v1", "services", namespace=entry.namespace), manifest)
        self._services.add(key)

    # -- MIG ----------------------------------------------------------------------------------
    async def _record_intents(self, plan: Plan, nodes: Mapping[str, Obj],
                              limited: Callable[..., Any]) -> None:
        by_node: dict[str, dict[int, Any]] = {}
        for change in plan.layout_changes:
            by_node.setdefault(change.node, {})[change.gpu] = change.after
        jobs = []
        for node_name, changes in sorted(by_node.items()):
            node = nodes.get(node_name)
            if node is None:
                continue
            current, target = miglayout.node_layouts(node)
            if target is not None:
                continue  # one re-layout at a time per node
            count = int((node["metadata"].get("labels", {}) or {}).get("nvidia.com/gpu.count", "0"))
            base = current if current is not None and len(current) == count else [{} for _ in range(count)]
            new = [dict(x) for x in base]
            for gpu, after in changes.items():
                new[gpu] = miglayout.per_gpu_counts([after])[0]
            if new == base:
                continue
            jobs.append(limited(self._patch_node, node_name, {
                "metadata": {"annotations": {
                    names.ANN_MIG_LAYOUT_TARGET: miglayout.layouts_json(new),
                    names.ANN_MIG_CONFIG_PREVIOUS: (node["metadata"].get("labels", {}) or {}).get(
                        names.LABEL_MIG_CONFIG, ""),
                }}
            }))
        await asyncio.gather(*jobs)

    def _patch_node(self, name: str, body: Obj) -> Obj:
        updated = self.kube.merge_patch(path_for("v1", "nodes", name), body)
        self.store.upsert(Kind.NODE, updated)
        return updated

    async def _drive_mig(self, nodes: Mapping[str, Obj], pods: list[Obj], limited: Callable[..., Any],
                         now: float) -> int:
        relabeled = 0
        for name, node in sorted(nodes.items()):
            if not (node["metadata"].get("annotations", {}) or {}).get(names.ANN_MIG_LAYOUT_TARGET):
                continue
            current, target = miglayout.node_layouts(node)
            if target is None:
                continue
            labels = node["metadata"].get("labels", {}) or {}
            want = miglayout.config_name(target)
            state = labels.get(names.LABEL_MIG_CONFIG_STATE, "")
            changed = _changed_gpus(current, target)
            on_node = [p for p in pods if (p.get("spec", {}).get("nodeName") or (
                p["metadata"].get("annotations", {}) or {}).get(names.ANN_NODE)) == name and not _finished(p)]
            if labels.get(names.LABEL_MIG_CONFIG) != want:
                blockers = self._relayout_blockers(on_node, changed)
                if blockers:
                    log.info("MIG re-layout of %s waits for %s", name, ", ".join(blockers[:5]))
                    continue
                await limited(self._ensure_mig_config, want, target)
                await limited(self._patch_node, name, {"metadata": {"labels": {
                    names.LABEL_MIG_CONFIG: want, names.LABEL_MIG_CONFIG_STATE: "pending"}}})
                self._event(node, "Normal", "MigReconfigure",
                            f"asked the MIG manager for {want} on GPUs {sorted(changed)}: "
                            f"{miglayout.layouts_json(target)}", kind="Node")
                relabeled += 1
            elif state == "success" and miglayout.allocatable_matches(node, target):
                await limited(self._patch_node, name, {"metadata": {"annotations": {
                    names.ANN_MIG_LAYOUT: miglayout.layouts_json(target),
                    names.ANN_MIG_LAYOUT_TARGET: None,
                    names.ANN_MIG_CONFIG_PREVIOUS: None,
                }}})
                self._event(node, "Normal", "MigReconfigured", f"MIG layout {want} applied", kind="Node")
            elif state == "failed":
                victims = [p for p in on_node if _is_ours(p) and p.get("spec", {}).get("schedulingGates")
                           and _pod_gpus(p) & changed and not p["metadata"].get("deletionTimestamp")]
                await asyncio.gather(*(limited(self._delete_pod, p) for p in victims))
                await limited(self._patch_node, name, {"metadata": {"annotations": {
                    names.ANN_MIG_LAYOUT_TARGET: None,
                    names.ANN_MIG_CONFIG_PREVIOUS: None,
                    names.ANN_MIG_FAILED: f"{now:.0f} {want}",
                }}})
                self._event(node, "Warning", "MigReconfigureFailed",
                            f"the MIG manager failed to apply {want}; node left out of MIG placement for "
                            f"{self.settings.failed_cooldown_s:.0f}s, {len(victims)} waiting replica(s) re-placed",
                            kind="Node")
        return relabeled

    def _relayout_blockers(self, pods: list[Obj], changed: set[int]) -> list[str]:
        """Pods a re-layout of ``changed`` GPUs would hurt: running (or terminating) GPU pods on them."""
        out = []
        for pod in pods:
            if not _holds_gpu(pod):
                continue
            if _is_ours(pod):
                gated = bool(pod.get("spec", {}).get("schedulingGates"))
                if gated or not (_pod_gpus(pod) & changed):
                    continue
            out.append(_pod_key(pod))  # ours on a changed GPU, or anyone else's GPU pod (GPU unknown)
        return out

    def _ensure_mig_config(self, name: str, layouts: list[dict[str, int]]) -> None:
        path = path_for("v1", "configmaps", self.settings.mig_config_map, self.settings.namespace)
        for _attempt in range(5):
            if self._mig_doc is None:
                current = self.kube.get(path)
                content = None if current is None else (current.get("data") or {}).get(miglayout.CONFIG_KEY)
                version = None if current is None else current["metadata"]["resourceVersion"]
                self._mig_doc = (content, version)
            content, version = self._mig_doc
            doc, changed = miglayout.mig_parted_document(content, {name: layouts})
            if not changed:
                return
            body: Obj = {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": self.settings.mig_config_map, "namespace": self.settings.namespace,
                             "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY}},
                "data": {miglayout.CONFIG_KEY: doc},
            }
            try:
                if version is None:
                    result = self.kube.create(
                        path_for("v1", "configmaps", namespace=self.settings.namespace), body)
                    if result is None:
                        self._mig_doc = None
                        continue
                else:
                    body["metadata"]["resourceVersion"] = version
                    result = self.kube.request("PUT", path, body)
            except KubeError as err:
                if err.status == 409:
                    self._mig_doc = None
                    continue
                raise
            self._mig_doc = (doc, result["metadata"]["resourceVersion"])
            return
        raise KubeError(409, f"could not update ConfigMap {self.settings.mig_config_map}: conflicts")

    async def _ungate(self, pods: list[Obj], nodes: Mapping[str, Obj], limited: Callable[..., Any]) -> int:
        jobs = []
        for pod in pods:
            f = self._facts(pod)
            if not f.ours or not f.mig_gated or f.deleting:
                continue
            node = nodes.get(pod["metadata"]["annotations"].get(names.ANN_NODE, ""))
            if node is None:
                continue
            current, target = miglayout.node_layouts(node)
            labels = node["metadata"].get("labels", {}) or {}
            if target is not None and _pod_gpus(pod) & _changed_gpus(current, target):
                continue
            if labels.get(names.LABEL_MIG_CONFIG_STATE, "success") != "success":
                continue
            if current is not None and not miglayout.allocatable_matches(node, current):
                continue
            jobs.append(limited(self._remove_gate, pod))
        done = await asyncio.gather(*jobs)
        return sum(1 for d in done if d)

    def _remove_gate(self, pod: Obj) -> bool:
        meta = pod["metadata"]
        gates = [g for g in pod["spec"].get("schedulingGates", []) if g.get("name") != names.MIG_GATE]
        try:
            updated = self.kube.json_patch(path_for("v1", "pods", meta["name"], meta["namespace"]), [
                {"op": "test", "path": "/metadata/uid", "value": meta["uid"]},
                {"op": "replace", "path": "/spec/schedulingGates", "value": gates},
            ])
        except KubeError as err:
            if err.status in (404, 409, 422):
                return False
            raise
        self.store.upsert(Kind.POD, updated)
        return True

    # -- status and events --------------------------------------------------------------------
    async def _write_statuses(
        self,
        pools: Mapping[str, ParsedPool],
        plan: Plan,
        pod_names: Mapping[tuple[str, int], tuple[str, int]],
        desired: Mapping[str, int],
        limited: Callable[..., Any],
    ) -> int:
        by_demand: dict[str, list[Obj]] = {}
        seen: dict[str, list[Any]] = {}
        for pod in self.store.all(Kind.POD):
            f = self._facts(pod)
            if f.ours and not f.deleting and not f.finished:
                by_demand.setdefault(f.demand, []).append(pod)
                seen.setdefault(f.demand, []).append((f.key.split("/", 1)[1], f.bound, f.gated, f.ready))
        index: dict[str, list[Assignment]] = {}
        for a in plan.assignments:
            index.setdefault(a.demand, []).append(a)
        unplaced_by: dict[str, list[str]] = {}
        for u in plan.unplaced:
            unplaced_by.setdefault(u.demand, []).append(f"{u.count}:{u.reason}")
        now = _now()
        jobs = []
        for key, entry in pools.items():
            pool = entry.pool
            if pool is None:
                continue
            stored = (self.store.get(Kind.POOL, key) or {}).get("status")
            inputs = self._inputs_of(entry, index, unplaced_by, seen, desired)
            if stored and stored.get("observedGeneration") == entry.generation and \
                    self._status_inputs.get(key) == inputs:
                continue  # nothing it is computed from changed since it was written
            previous = None
            if stored:
                with contextlib.suppress(ValueError):
                    previous = InferencePoolStatus.model_validate(stored)
            assignment_pods: dict[tuple[str, int], str] = {}
            for model in pool.spec.models:
                for a in index.get(names.demand_key(entry.namespace, entry.name, model.name), ()):
                    if a.pod is not None:
                        assignment_pods[(a.demand, a.replica)] = a.pod.split("/", 1)[1]
                    elif (a.demand, a.replica) in pod_names:
                        assignment_pods[(a.demand, a.replica)] = pod_names[(a.demand, a.replica)][0]
            status = pool_status(pool, plan, by_demand, assignment_pods, desired, previous, now, index=index)
            self._status_inputs[key] = inputs
            if not status_differs(stored, status):
                continue
            if previous is None or _unplaced_changed(previous, status):
                for u in plan.unplaced:
                    if u.demand.startswith(key + "/"):
                        obj = self.store.get(Kind.POOL, key) or {}
                        self._event(obj, "Warning", "Unplaceable",
                                    f"{u.demand.rsplit('/', 1)[1]}: {u.count} replica(s) unplaced: {u.reason}",
                                    kind="InferencePool")
            jobs.append(limited(self._patch_status, entry, status))
        # the cycle's Events go out with the status writes (one round trip, not two)
        events = [limited(self._post_event, *e) for e in self._grouped_events()]
        self._events.clear()
        done = await asyncio.gather(*jobs, *events)
        return sum(1 for d in done[:len(jobs)] if d)

    @staticmethod
    def _inputs_of(entry: ParsedPool, index: Mapping[str, list[Assignment]], unplaced: Mapping[str, list[str]],
                   pods: Mapping[str, list[Any]], desired: Mapping[str, int]) -> Any:
        """A comparable summary of everything a pool's status is computed from."""
        assert entry.pool is not None
        out: list[Any] = [entry.generation]
        for model in entry.pool.spec.models:
            key = names.demand_key(entry.namespace, entry.name, model.name)
            out.append((
                key, desired.get(key),
                tuple((a.replica, a.node, a.shape, a.cost, a.pod) for a in index.get(key, ())),
                tuple(unplaced.get(key, ())),
                tuple(sorted(pods.get(key, ()))),  # (name, node, gated, ready) of its live pods
            ))
        return tuple(out)

    def _patch_status(self, entry: ParsedPool, status: InferencePoolStatus) -> bool:
        path = path_for(API_VERSION, "inferencepools", entry.name, entry.namespace, "status")
        try:
            updated = self.kube.merge_patch(path, {"status": status.to_wire()})
        except KubeError as err:
            if err.status == 404:
                return False
            raise
        self.store.upsert(Kind.POOL, updated)
        return True

    def _event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str, kind: str = "Pod") -> None:
        """Queue an Event; a replica's events go to its InferencePool (``kubectl describe ipool``)."""
        meta = obj.get("metadata", {})
        involved: Obj = {"apiVersion": "v1", "kind": kind, "name": meta.get("name"), "uid": meta.get("uid")}
        if kind == "InferencePool":
            involved["apiVersion"] = API_VERSION
        if kind == "Pod":
            owner = next((o for o in meta.get("ownerReferences", []) or [] if o.get("kind") == "InferencePool"), None)
            if owner is not None:
                involved = {"apiVersion": API_VERSION, "kind": "InferencePool", "name": owner["name"],
                            "uid": owner["uid"]}
        if meta.get("namespace"):
            involved["namespace"] = meta["namespace"]
        self._events.append((involved, type_, reason, message))

    def _grouped_events(self) -> list[tuple[Obj, str, str, str]]:
        """One Event per object, type and reason per cycle: 200 replicas placed make one Event per
        pool, not 200 (each Event is a write the API server must take)."""
        groups: dict[tuple[str, str, str], tuple[Obj, list[str]]] = {}
        for involved, type_, reason, message in self._events:
            key = (str(involved.get("uid") or involved.get("name")), type_, reason)
            groups.setdefault(key, (involved, []))[1].append(message)
        out = []
        for (_, type_, reason), (involved, messages) in groups.items():
            text = messages[0] if len(messages) == 1 else f"{len(messages)} replicas: " + "; ".join(messages)
            out.append((involved, type_, reason, text if len(text) <= 1024 else text[:1020] + " ..."))
        return out

    def _post_event(self, involved: Obj, type_: str, reason: str, message: str) -> None:
        namespace = involved.get("namespace") or "default"
        ts = _now().strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{involved.get('name', 'gpupool')}.{uuid.uuid4().hex[:12]}", "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": "gpupool-operator"},
            "reportingComponent": "gpupool.io/operator",
            "reportingInstance": "gpupool-operator",
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
        }
        try:
            self.kube.create(path_for("v1", "events", namespace=namespace), body)
        except KubeError as err:  # events are best effort
            log.debug("event not recorded: %s", err)


def _unplaced_changed(previous: InferencePoolStatus, new: InferencePoolStatus) -> bool:
    return json.dumps([m.message for m in previous.models]) != json.dumps([m.message for m in new.models])

