"""The act stage: carry out a decision's writes, each pool's failures kept to that pool.

Groups run in order (MIG steps, stops, starts, Services, ungates), the writes of a group
concurrently (bounded). Every write runs in the Kube thread pool; what it returns is written
through the store here, on the event loop's thread, so the store has one writer thread. A write
the API server refuses (403 RBAC or quota, a terminating namespace, 409, 422, ...) is recorded
against its pool with the server's own reason and message and never raised: the other pools'
writes go on in the same cycle, and the loop backs the refused pool off. Pods are deleted with a
uid precondition; creations with deterministic names meet "already exists" instead of duplicating.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gpupool_operator.adapters import metrics, names
from gpupool_operator.adapters.events import EventRecorder, involved_node, involved_pool
from gpupool_operator.adapters.kube import Kube, KubeError, NotLeader, path_for
from gpupool_operator.adapters.migconfig import MigConfigWriter
from gpupool_operator.adapters.observe import Observation
from gpupool_operator.adapters.ownership import owner_uid
from gpupool_operator.adapters.store import Kind, Store
from gpupool_operator.adapters.workloads import WorkerSettings, model_service, replica_pod
from gpupool_operator.core.backoff import Refusal
from gpupool_operator.core.decide import Decision
from gpupool_operator.core.demand import Products, shape_throughput
from gpupool_operator.core.inventory import Snapshot
from gpupool_operator.core.migparted import layouts_json
from gpupool_operator.core.plan import Action, ActionKind, Assignment
from gpupool_operator.core.solver import products_of

__all__ = ["Actuator", "Outcome", "refusal_of"]

log = logging.getLogger("gpupool.act")
_MIG_STEPS = {ActionKind.SET_MIG_LAYOUT: "requested", ActionKind.COMMIT_MIG_LAYOUT: "applied",
              ActionKind.ABANDON_MIG_LAYOUT: "abandoned"}
Obj = dict[str, Any]
MIG_KINDS = (ActionKind.SET_MIG_LAYOUT, ActionKind.RECORD_MIG_INTENT, ActionKind.MARK_MIG_SEEN,
             ActionKind.COMMIT_MIG_LAYOUT, ActionKind.ABANDON_MIG_LAYOUT)
GROUPS = (MIG_KINDS, (ActionKind.STOP,), (ActionKind.START,),
          (ActionKind.CREATE_SERVICE, ActionKind.REPAIR_SERVICE), (ActionKind.UNGATE,))


def refusal_of(err: KubeError, what: str) -> Refusal:
    """A refused write in words: the API server's reason (CamelCase) and message."""
    reason = err.reason if err.reason.isalnum() and err.reason[:1].isupper() else "WriteRefused"
    return Refusal(err.status, reason, f"{what} refused by the API server ({err.status} {err.reason}): {err.message}")


@dataclass
class Outcome:
    """What one act stage did."""

    created: dict[tuple[str, int], str] = field(default_factory=dict)  # (demand, plan replica) -> pod
    stopped: list[str] = field(default_factory=list)
    refusals: dict[str, Refusal] = field(default_factory=dict)  # pool -> first refused write
    wrote: set[str] = field(default_factory=set)  # pools with a write that went through
    stale: bool = False  # a create met our own unseen pod: plan afresh
    fenced: bool = False  # this replica stopped being the leader meanwhile
    failures: list[tuple[str, str]] = field(default_factory=list)  # (stage, reason) of cluster-wide failures
    done: Counter[ActionKind] = field(default_factory=Counter)


def _now() -> float:
    return datetime.now(UTC).timestamp()


def _rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Actuator:
    """Carries out :class:`~gpupool_operator.core.decide.Decision` actions (see the module doc)."""

    def __init__(self, kube: Kube, store: Store, events: EventRecorder, mig: MigConfigWriter,
                 worker: WorkerSettings, concurrency: int = 16) -> None:
        self.kube = kube
        self.store = store
        self.events = events
        self.mig = mig
        self.worker = worker
        self.concurrency = concurrency
        self._products: tuple[Snapshot, Products] | None = None  # the last snapshot's, for throughput look-ups

    async def apply(self, decision: Decision, seen: Observation) -> Outcome:
        out = Outcome()
        sem = asyncio.Semaphore(self.concurrency)

        async def one(action: Action) -> None:
            async with sem:
                try:
                    await self._do(action, seen, out)
                    out.done[action.kind] += 1
                    if action.pool:
                        out.wrote.add(action.pool)
                except NotLeader:
                    out.fenced = True
                except KubeError as err:
                    self._refused(action, err, seen, out)

        for kinds in GROUPS:
            await asyncio.gather(*(one(a) for a in decision.actions if a.kind in kinds))
            if out.fenced:
                break
        return out

    def _refused(self, action: Action, err: KubeError, seen: Observation, out: Outcome) -> None:
        what = f"{action.kind.value} {action.pod or action.node or action.pool}"
        refusal = refusal_of(err, what)
        log.warning("%s", refusal.message)
        if action.pool:
            out.refusals.setdefault(action.pool, refusal)
            entry = seen.pools.get(action.pool)
            if entry is not None:
                self.events.record(involved_pool(entry.namespace, entry.name, entry.uid), True, "WriteRefused",
                                   refusal.message)
        else:
            out.failures.append(("act", refusal.reason))
            node = seen.nodes.get(action.node)
            if node is not None:
                self.events.record(involved_node(node), True, "WriteRefused", refusal.message)

    async def _call(self, func: Callable[..., Any], *args: Any) -> Any:
        return await self.kube.run(func, *args)

    async def _do(self, a: Action, seen: Observation, out: Outcome) -> None:
        handlers: Mapping[ActionKind, Callable[[Action, Observation, Outcome], Awaitable[None]]] = {
            ActionKind.STOP: self._stop, ActionKind.START: self._start, ActionKind.UNGATE: self._ungate,
            ActionKind.CREATE_SERVICE: self._create_service, ActionKind.REPAIR_SERVICE: self._repair_service,
        }
        handler = handlers.get(a.kind, self._mig_step)
        await handler(a, seen, out)

    def _pool_event(self, a: Action, seen: Observation, reason: str, message: str, warning: bool = False) -> None:
        entry = seen.pools.get(a.pool)
        if entry is not None and reason:
            self.events.record(involved_pool(entry.namespace, entry.name, entry.uid), warning, reason, message)

    # -- pods -----------------------------------------------------------------------------------
    async def _stop(self, a: Action, seen: Observation, out: Outcome) -> None:
        namespace, name = a.pod.split("/", 1)
        await self._call(self.kube.delete, path_for("v1", "pods", name, namespace), a.uid or None)
        pod = self.store.get(Kind.POD, a.pod)
        if pod is not None:  # write-through: terminating until the watch says it is gone
            self.store.replace(Kind.POD, {**pod, "metadata": {**pod["metadata"], "deletionTimestamp": _rfc3339()}})
        out.stopped.append(a.pod)
        self._pool_event(a, seen, a.event, a.reason, a.warning)

    def _throughput(self, seen: Observation, assignment: Assignment) -> float | None:
        """The pool's throughput profile for the planned shape (``None`` when it declares none)."""
        demand = next((d for d in seen.demands if d.key == assignment.demand), None)
        if demand is None:
            return None
        if self._products is None or self._products[0] is not seen.snapshot:
            self._products = (seen.snapshot, products_of(seen.snapshot))
        return shape_throughput(demand, assignment.shape, self._products[1])

    async def _start(self, a: Action, seen: Observation, out: Outcome) -> None:
        entry = seen.pools.get(a.pool)
        assignment = a.assignment
        if entry is None or entry.pool is None or assignment is None:
            return
        node = seen.nodes.get(a.node, {})
        product = (node.get("metadata", {}).get("labels") or {}).get("nvidia.com/gpu.product", "")
        price = next((n.gpu_price for n in (seen.bases.get(a.node),) if n is not None), 0.0)
        emulated = (node.get("metadata", {}).get("labels") or {}).get(names.LABEL_EMULATED) == "true"
        manifest = replica_pod(entry.pool, entry.uid, entry.pool.spec.model(a.model), assignment, a.replica,
                               product, price, a.gated, self.worker,
                               inferences_per_second=self._throughput(seen, assignment), emulated=emulated)
        namespace = manifest["metadata"]["namespace"]
        created = await self._call(self.kube.create, path_for("v1", "pods", namespace=namespace), manifest)
        if created is None:  # the name exists: ours unseen (plan afresh), or squatted by someone else
            current = await self._call(self.kube.get, path_for("v1", "pods", manifest["metadata"]["name"], namespace))
            if current is not None and owner_uid(current) != entry.uid:
                raise KubeError(409, f"pod {a.pod} exists and is not owned by InferencePool {entry.name}",
                                "AlreadyExists")
            if current is not None:
                self.store.upsert(Kind.POD, current)
            out.stale = True
            return
        self.store.upsert(Kind.POD, created)
        out.created[(assignment.demand, assignment.replica)] = a.pod
        ann = manifest["metadata"]["annotations"]
        where = ann.get(names.ANN_MIG_INSTANCE) or ann.get(names.ANN_GPUS) or "cpu"
        gate = " (gated until the MIG layout is applied)" if a.gated else ""
        self._pool_event(a, seen, "Placed", f"replica {a.pod.split('/', 1)[1]} placed on {a.node} [{where}]{gate} "
                         f"at {ann[names.ANN_USD_PER_HOUR]} $/h")

    async def _ungate(self, a: Action, seen: Observation, out: Outcome) -> None:
        pod = self.store.get(Kind.POD, a.pod)
        if pod is None:
            return
        gates = [g for g in pod["spec"].get("schedulingGates", []) if g.get("name") != names.MIG_GATE]
        namespace, name = a.pod.split("/", 1)
        try:
            updated = await self._call(self.kube.json_patch, path_for("v1", "pods", name, namespace), [
                {"op": "test", "path": "/metadata/uid", "value": a.uid},
                {"op": "replace", "path": "/spec/schedulingGates", "value": gates},
            ])
        except KubeError as err:
            if err.status in (404, 409, 422):  # gone, or a successor of the same name: nothing to do
                return
            raise
        self.store.upsert(Kind.POD, updated)

    # -- Services -------------------------------------------------------------------------------
    def _service_manifest(self, a: Action, seen: Observation) -> Obj | None:
        entry = seen.pools.get(a.pool)
        if entry is None or entry.pool is None:
            return None
        return model_service(entry.pool, entry.uid, entry.pool.spec.model(a.model))

    async def _create_service(self, a: Action, seen: Observation, out: Outcome) -> None:
        manifest = self._service_manifest(a, seen)
        if manifest is None:
            return
        namespace = manifest["metadata"]["namespace"]
        created = await self._call(self.kube.create, path_for("v1", "services", namespace=namespace), manifest)
        if created is None:  # exists, unseen by the watch (labels edited away?): read it, repair next cycle
            created = await self._call(self.kube.get, path_for("v1", "services", manifest["metadata"]["name"],
                                                               namespace))
            if created is not None and owner_uid(created) != manifest["metadata"]["ownerReferences"][0]["uid"]:
                raise KubeError(409, f"Service {a.pod} exists and is not owned by the pool", "AlreadyExists")
        if created is not None:
            self.store.upsert(Kind.SERVICE, created)

    async def _repair_service(self, a: Action, seen: Observation, out: Outcome) -> None:
        manifest = self._service_manifest(a, seen)
        current = self.store.get(Kind.SERVICE, a.pod)
        if manifest is None or current is None:
            return
        selector: dict[str, Any] = dict.fromkeys((current.get("spec") or {}).get("selector") or {})
        selector.update(manifest["spec"]["selector"])
        patch = {"metadata": {"labels": manifest["metadata"]["labels"],
                              "resourceVersion": current["metadata"].get("resourceVersion")},
                 "spec": {"selector": selector, "ports": manifest["spec"]["ports"]}}
        namespace, name = a.pod.split("/", 1)
        updated = await self._call(self.kube.merge_patch, path_for("v1", "services", name, namespace), patch)
        self.store.upsert(Kind.SERVICE, updated)
        self._pool_event(a, seen, a.event, a.reason, a.warning)

    # -- MIG ------------------------------------------------------------------------------------
    async def _mig_step(self, a: Action, seen: Observation, out: Outcome) -> None:
        node = seen.nodes.get(a.node)
        if node is None or a.target is None:
            return
        meta = node["metadata"]
        ann, labels = meta.get("annotations") or {}, meta.get("labels") or {}
        target = layouts_json(a.target)
        now = _now()
        if a.kind is ActionKind.SET_MIG_LAYOUT:
            await self._call(self.mig.ensure, a.config, a.target)
            request = {"config": a.config, "at": now, "stateThen": labels.get(names.LABEL_MIG_CONFIG_STATE, ""),
                       "seen": False}
            body = {"labels": {names.LABEL_MIG_CONFIG: a.config}, "annotations": {
                names.ANN_MIG_LAYOUT_TARGET: target,
                names.ANN_MIG_LAYOUT_SINCE: ann.get(names.ANN_MIG_LAYOUT_SINCE) or f"{now:.0f}",
                names.ANN_MIG_CONFIG_PREVIOUS: ann.get(names.ANN_MIG_CONFIG_PREVIOUS,
                                                       labels.get(names.LABEL_MIG_CONFIG, "")),
                names.ANN_MIG_REQUEST: json.dumps(request, sort_keys=True)}}
            message = f"asked NVIDIA's MIG manager for {a.config}: {target}"
        elif a.kind is ActionKind.RECORD_MIG_INTENT:
            body = {"annotations": {
                names.ANN_MIG_LAYOUT_TARGET: target,
                names.ANN_MIG_LAYOUT_SINCE: ann.get(names.ANN_MIG_LAYOUT_SINCE) or f"{now:.0f}",
                names.ANN_MIG_CONFIG_PREVIOUS: ann.get(names.ANN_MIG_CONFIG_PREVIOUS,
                                                       labels.get(names.LABEL_MIG_CONFIG, ""))}}
            message = f"MIG layout {target} waits: {a.reason}"
        elif a.kind is ActionKind.MARK_MIG_SEEN:
            request = json.loads(ann.get(names.ANN_MIG_REQUEST) or "{}")
            body = {"annotations": {names.ANN_MIG_REQUEST: json.dumps({**request, "seen": True}, sort_keys=True)}}
            message = ""
        else:
            done = a.kind is ActionKind.COMMIT_MIG_LAYOUT
            annotations: dict[str, str | None] = dict.fromkeys(
                (names.ANN_MIG_LAYOUT_TARGET, names.ANN_MIG_LAYOUT_SINCE, names.ANN_MIG_CONFIG_PREVIOUS,
                 names.ANN_MIG_REQUEST))
            annotations[names.ANN_MIG_LAYOUT if done else names.ANN_MIG_FAILED] = target if done else (
                f"{now:.0f} {labels.get(names.LABEL_MIG_CONFIG, '')} {a.reason}"[:1024])
            if done:
                annotations[names.ANN_MIG_FAILED] = None
            body = {"annotations": annotations}
            if a.config:  # roll the label back, so the node returns to the layout it had
                body["labels"] = {names.LABEL_MIG_CONFIG: a.config}
            message = f"MIG layout {target} applied" if done else f"MIG re-layout abandoned: {a.reason}"
        updated = await self._call(self.kube.merge_patch, path_for("v1", "nodes", a.node), {"metadata": body})
        self.store.upsert(Kind.NODE, updated)
        if a.kind in _MIG_STEPS:
            metrics.MIG_RELAYOUTS.labels(step=_MIG_STEPS[a.kind]).inc()
        if a.event:
            self.events.record(involved_node(node), a.warning, a.event, message)

