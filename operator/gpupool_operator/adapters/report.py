"""The report stage: what the cycle did, told where people look.

* every InferencePool's status (placements, readiness, $/h, $/1M from served inferences only,
  Ready / Placed / Scaling / Degraded with reasons; a refused write: Degraded with the API
  server's reason), written only when something it is computed from changed;
* the GPUPoolConfig's ``Accepted`` condition (a refused configuration says why; the last
  accepted one stays in force);
* Events: the cycle's (grouped), pods copying the operator's labels, new node inventory warnings,
  and a ``CapacityConflict`` Warning on a node each time what its allocatable disagrees with in its
  labels changes (``Node.capacity_conflicts``; allocatable wins);
* metrics: desired and ready replicas per pool and model.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gpupool_operator.adapters import metrics, modelload, names
from gpupool_operator.adapters.demands import ParsedPool
from gpupool_operator.adapters.events import EventRecorder, involved_node, involved_pod, involved_pool
from gpupool_operator.adapters.kube import Kube, KubeError, path_for
from gpupool_operator.adapters.observe import Observation
from gpupool_operator.adapters.status import fake_nodes, pool_status, status_differs, unplaced_reason
from gpupool_operator.adapters.store import Kind, Store
from gpupool_operator.api import (
    API_VERSION,
    Condition,
    ConditionReason,
    ConditionStatus,
    ConditionType,
    InferencePoolStatus,
)
from gpupool_operator.core.backoff import Refusal
from gpupool_operator.core.demand import ShapeKind
from gpupool_operator.core.plan import Assignment, Plan

__all__ = ["Reporter"]

log = logging.getLogger("gpupool.report")
Obj = dict[str, Any]


class Reporter:
    """Writes statuses, the config's Accepted condition, Events and gauges (see the module doc)."""

    def __init__(self, kube: Kube, store: Store, events: EventRecorder, concurrency: int = 16) -> None:
        self.kube = kube
        self.store = store
        self.events = events
        self.concurrency = concurrency
        self._inputs: dict[str, Any] = {}  # pool -> what its last written status was computed from
        self._warned: set[str] = set()  # pods and node warnings already told
        self._conflicts: dict[str, tuple[str, ...]] = {}  # node -> the capacity conflicts last told
        self._gauges: set[tuple[str, str, str]] = set()

    async def report(self, seen: Observation, plan: Plan, created: Mapping[tuple[str, int], str],
                     refused: Mapping[str, Refusal]) -> int:
        """Write what changed; returns how many statuses were written."""
        now = datetime.now(UTC)
        plan = with_cooldowns(plan, seen)
        sem = asyncio.Semaphore(self.concurrency)

        async def limited(func: Any, *args: Any) -> Any:
            async with sem:
                return await self.kube.run(func, *args)

        jobs = [limited(self._patch_status, entry, status)
                for entry, status in self._statuses(seen, plan, created, refused, now)]
        config = self._config_status(seen, now)
        if config is not None:
            jobs.append(limited(self._patch_config, config))
        self._warn(seen)
        results = await asyncio.gather(*jobs, *(limited(self.events.post, *e) for e in self.events.take()))
        for result in results:
            if isinstance(result, tuple):
                kind, obj = result
                self.store.upsert(kind, obj)
        self._metrics(seen, plan)
        return sum(1 for r in results[: len(jobs)] if isinstance(r, tuple) and r[0] is Kind.POOL)

    # -- pools ----------------------------------------------------------------------------------
    def _statuses(self, seen: Observation, plan: Plan, created: Mapping[tuple[str, int], str],
                  refused: Mapping[str, Refusal], now: datetime) -> list[tuple[ParsedPool, InferencePoolStatus]]:
        by_demand: dict[str, list[Obj]] = {}
        live: dict[str, list[Any]] = {}
        fake = fake_nodes(seen.nodes)  # KWOK: Ready there is not serving (status.servingReplicas)
        pods = {f"{p['metadata'].get('namespace')}/{p['metadata']['name']}": p for p in seen.pods}
        for r in seen.replicas:
            if not r.deleting and not r.finished and r.key in pods:
                by_demand.setdefault(r.demand, []).append(pods[r.key])
                live.setdefault(r.demand, []).append((r.key, r.node if r.bound else None, r.gated, r.ready,
                                                      r.node in fake))
        index: dict[str, list[Assignment]] = {}
        for a in plan.assignments:
            index.setdefault(a.demand, []).append(a)
        unplaced: dict[str, list[str]] = {}
        for u in plan.unplaced:
            unplaced.setdefault(u.demand, []).append(f"{u.count}:{u.reason}")
        desired = seen.desired
        out: list[tuple[ParsedPool, InferencePoolStatus]] = []
        for key, entry in seen.pools.items():
            assert entry.pool is not None
            stored = (self.store.get(Kind.POOL, key) or {}).get("status")
            demands = [names.demand_key(entry.namespace, entry.name, m.name) for m in entry.pool.spec.models]
            failures = [f for d in demands for p in by_demand.get(d, ()) for f in modelload.failures_from_pod(p)]
            # the workers' own words, from the background metrics scrape (workerstats.StatsCollector)
            failures += [f for d in demands for f in seen.worker_failures.get(d, ()) if f not in failures]
            inputs = (entry.generation, refused.get(key), tuple(failures), tuple(
                (d, desired.get(d), tuple((a.replica, a.node, a.shape, a.cost, a.pod) for a in index.get(d, ())),
                 tuple(unplaced.get(d, ())), tuple(sorted(live.get(d, ()))), _load_key(seen.loads.get(d)))
                for d in demands))
            if stored and stored.get("observedGeneration") == entry.generation and self._inputs.get(key) == inputs:
                continue  # nothing it is computed from changed since it was written
            previous = None
            if stored:
                with contextlib.suppress(ValueError):
                    previous = InferencePoolStatus.model_validate(stored)
            names_of = {(a.demand, a.replica): (a.pod or created.get((a.demand, a.replica)) or "").split("/", 1)[-1]
                        for d in demands for a in index.get(d, ())}
            had = {c.type: c.status for c in (previous.conditions if previous else ())}.get("ModelLoadFailed")
            status = pool_status(entry.pool, plan, by_demand, {k: v for k, v in names_of.items() if v}, desired,
                                 previous, now, index=index, refused=refused.get(key), loads=seen.loads,
                                 load_failures=failures if failures or had else None,  # adapters.modelload
                                 fake=fake)
            if failures and had != "True":
                for _, reason, message in modelload.load_events(failures):
                    self.events.record(involved_pool(entry.namespace, entry.name, entry.uid), True, reason, message)
            self._inputs[key] = inputs
            if not status_differs(stored, status):
                continue
            if previous is None or [m.message for m in previous.models] != [m.message for m in status.models]:
                for u in plan.unplaced:
                    if u.demand.startswith(key + "/"):
                        # the reason the conditions carry: the solver's code (BudgetExceeded, NodesTainted, ...)
                        self.events.record(involved_pool(entry.namespace, entry.name, entry.uid), True,
                                           str(unplaced_reason(u)),
                                           f"{u.demand.rsplit('/', 1)[1]}: {u.count} replica(s) unplaced: {u.reason}")
            out.append((entry, status))
        return out

    def _patch_status(self, entry: ParsedPool, status: InferencePoolStatus) -> tuple[Kind, Obj] | None:
        path = path_for(API_VERSION, "inferencepools", entry.name, entry.namespace, "status")
        try:
            return Kind.POOL, self.kube.merge_patch(path, {"status": status.to_wire()})
        except KubeError as err:
            if err.status != 404:
                log.warning("status of %s/%s not written: %s", entry.namespace, entry.name, err)
                metrics.FAILURES.labels(stage="report", reason=err.reason or str(err.status)).inc()
            return None

    # -- the GPUPoolConfig ----------------------------------------------------------------------
    def _config_status(self, seen: Observation, now: datetime) -> Obj | None:
        obj = seen.config_obj
        if obj is None:
            return None
        generation = obj.get("metadata", {}).get("generation")
        ok = seen.config_problem is None
        reason = ConditionReason.CONFIG_LOADED if ok else ConditionReason.CONFIG_REJECTED
        message = f"generation {generation} is in force" if ok else str(seen.config_problem)
        stored = (obj.get("status") or {})
        current: dict[str, Any] = next(
            (c for c in stored.get("conditions") or [] if c.get("type") == "Accepted"), {})
        if stored.get("observedGeneration") == generation and current.get("reason") == reason.value and \
                current.get("message") == message:
            return None
        cond = Condition(type=ConditionType.ACCEPTED.value,
                         status=ConditionStatus.TRUE if ok else ConditionStatus.FALSE,
                         observed_generation=generation, last_transition_time=now, reason=reason.value,
                         message=message[:32768])
        return {"status": {"observedGeneration": generation, "conditions": [cond.to_wire()]}}

    def _patch_config(self, body: Obj) -> tuple[Kind, Obj] | None:
        try:
            return Kind.CONFIG, self.kube.merge_patch(path_for(API_VERSION, "gpupoolconfigs", "default",
                                                               subresource="status"), body)
        except KubeError as err:
            log.warning("GPUPoolConfig status not written: %s", err)
            return None

    # -- warnings and gauges --------------------------------------------------------------------
    def _warn(self, seen: Observation) -> None:
        if len(self._warned) > 100_000:
            self._warned.clear()
        for pod in seen.impostors:
            uid = str(pod["metadata"].get("uid") or pod["metadata"].get("name"))
            if uid not in self._warned:
                self._warned.add(uid)
                self.events.record(involved_pod(pod), True, "NotOwnedByPool", (
                    "this pod carries gpupool's replica labels and annotations but no ownerReference to an "
                    "InferencePool in its namespace: gpupool neither counts nor deletes it"))
        for node in seen.snapshot.nodes:
            for warning in node.warnings:
                key = f"{node.name}\x00{warning}"
                obj = seen.nodes.get(node.name)
                if key not in self._warned and obj is not None:
                    self._warned.add(key)
                    self.events.record(involved_node(obj), True, "NodeInventory", warning)
        self._warn_conflicts(seen)

    def _warn_conflicts(self, seen: Observation) -> None:
        """One Warning ``CapacityConflict`` on a node whenever its set of capacity conflicts
        (allocatable disagreeing with the labels; allocatable wins) changes to a non-empty one:
        not every cycle, and again when a cleared conflict comes back."""
        told: dict[str, tuple[str, ...]] = {}
        for node in seen.snapshot.nodes:
            obj = seen.nodes.get(node.name)
            conflicts = tuple(node.capacity_conflicts)
            if not conflicts or obj is None:
                continue
            told[node.name] = conflicts
            if self._conflicts.get(node.name) != conflicts:
                self.events.record(involved_node(obj), True, "CapacityConflict",
                                   "allocatable disagrees with the node's labels (allocatable wins): "
                                   + "; ".join(conflicts))
        self._conflicts = told

    def _metrics(self, seen: Observation, plan: Plan) -> None:
        ready: dict[str, int] = {}
        for r in seen.replicas:
            if r.ready and not r.deleting:
                ready[r.demand] = ready.get(r.demand, 0) + 1
        labels: set[tuple[str, str, str]] = set()
        for d in seen.demands:
            ns, pool, model = names.split_demand_key(d.key)
            labels.add((ns, pool, model))
            metrics.DESIRED_REPLICAS.labels(namespace=ns, pool=pool, model=model).set(d.replicas)
            metrics.READY_REPLICAS.labels(namespace=ns, pool=pool, model=model).set(ready.get(d.key, 0))
        for gone in self._gauges - labels:
            for gauge in (metrics.DESIRED_REPLICAS, metrics.READY_REPLICAS):
                with contextlib.suppress(KeyError):
                    gauge.remove(*gone)
        self._gauges = labels
        metrics.PLAN_USD_PER_HOUR.set(plan.cost_per_hour)
        metrics.UNPLACED_REPLICAS.set(sum(u.count for u in plan.unplaced))


def _load_key(load: Any) -> Any:
    """A load, rounded to what status shows (so noise in the last digits writes nothing)."""
    if load is None:
        return None
    per_million = load.usd_per_million_inferences
    return (round(load.queue_depth), round(load.inferences_per_second, 2),
            None if per_million is None else round(per_million, 4))


def with_cooldowns(plan: Plan, seen: Observation) -> Plan:
    """``plan`` with each unplaced MIG demand's reason saying which nodes' re-layouts wait for a
    cool-down after a failed one, and for how long (the solver only sees those nodes take no MIG
    replica, so its own reason would read as if a free GPU were refused)."""
    if not seen.cooling or not plan.unplaced:
        return plan
    mig = {d.key for d in seen.demands if any(a.kind is ShapeKind.MIG for a in d.accelerators)}
    waits = ", ".join(f"{node} after {datetime.fromtimestamp(until, UTC):%Y-%m-%dT%H:%M:%SZ}"  # stable text: no churn
                      for node, until in sorted(seen.cooling.items()))
    note = f"; MIG re-layouts that failed or timed out are retried after a cool-down: {waits}"
    unplaced = tuple(dataclasses.replace(u, reason=u.reason + note) if u.demand in mig else u for u in plan.unplaced)
    return dataclasses.replace(plan, unplaced=unplaced)
