"""The placement loop's stages end to end through the in-memory API (fake_api.py, held to the real
server by test_fake_api_contract.py): one pool's refused writes, copycat pods, MIG requests within
one cycle, hand-edited Services, metrics. The same behaviours run on the real control plane in the
cluster tests; these pin the decisions fast."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from fake_api import FakeKube
from operator_builders import PoolBuilder, fake_gpu_node
from prometheus_client import REGISTRY

from gpupool_operator.adapters import names
from gpupool_operator.adapters.kube import KubeError
from gpupool_operator.adapters.loop import PlacementLoop
from gpupool_operator.adapters.settings import OperatorSettings
from gpupool_operator.adapters.store import Kind, Store
from gpupool_operator.api import default_config

Obj = dict[str, Any]


class QuotaKube(FakeKube):
    """Refuses pod creations in ``refused`` namespaces the way a ResourceQuota does (403 Forbidden)."""

    def __init__(self, store: Store, refused: set[str]) -> None:
        super().__init__(store)
        self.refused = refused
        self.attempts: dict[str, int] = {}

    def send(self, method: str, path: str, body: Any, query: Any, content_type: str) -> Obj:
        parts = path.strip("/").split("/")
        if method == "POST" and parts[-1] == "pods" and parts[-2] in self.refused:
            self.attempts[parts[-2]] = self.attempts.get(parts[-2], 0) + 1
            raise KubeError(403, 'pods "x" is forbidden: exceeded quota: q, requested: pods=1, used: pods=0, '
                                 "limited: pods=0", "Forbidden")
        return super().send(method, path, body, query, content_type)


def _cluster(kube: FakeKube, store: Store, pools: list[Obj]) -> PlacementLoop:
    for i, node in enumerate([fake_gpu_node("gpu-0000", "A100-80GB", gpus=2, mig_strategy="mixed"),
                              {"metadata": {"name": "cpu-0000", "labels": {}},
                               "status": {"allocatable": {"cpu": "32", "memory": "128Gi"}}}]):
        node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
        node["metadata"]["uid"] = f"uid-node-{i}"
        store.apply_event(Kind.NODE, "ADDED", kube._stamp(node))
    store.apply_event(Kind.CONFIG, "ADDED", kube._stamp(default_config().to_wire()))
    for i, body in enumerate(pools):
        body["metadata"].update(uid=f"uid-pool-{i}", generation=1)
        store.apply_event(Kind.POOL, "ADDED", kube._stamp(body))
    loop = PlacementLoop(kube, store, OperatorSettings(backoff_base_s=30))
    loop._seeded = True
    kube.feed = loop.observer.feed
    return loop


def _live(store: Store, namespace: str) -> list[Obj]:
    return [p for p in store.all(Kind.POD) if p["metadata"]["namespace"] == namespace
            and not p["metadata"].get("deletionTimestamp")]


def _events(kube: FakeKube, reason: str) -> list[Obj]:
    return [o for k, o in kube.objects.items() if "/events/" in k and o.get("reason") == reason]


def _failures(reason: str) -> float:
    return REGISTRY.get_sample_value("gpupool_reconcile_failures_total", {"stage": "act", "reason": reason}) or 0.0


def test_a_refused_pool_backs_off_while_the_others_progress() -> None:
    async def scenario() -> None:
        store = Store()
        kube = QuotaKube(store, refused={"b"})
        loop = _cluster(kube, store, [PoolBuilder("ok", "a").cpu("c", replicas=2).obj(),
                                      PoolBuilder("capped", "b").cpu("c", replicas=2).obj()])
        before = _failures("Forbidden")
        report = await loop.cycle()
        assert report.refused == 1
        assert len(_live(store, "a")) == 2  # the other pool progressed in the same cycle
        assert not _live(store, "b")
        status = (store.get(Kind.POOL, "b/capped") or {})["status"]
        degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
        assert degraded["status"] == "True"
        assert degraded["reason"] == "Forbidden"
        assert "exceeded quota" in degraded["message"]
        assert "retrying in" in degraded["message"]
        assert _failures("Forbidden") > before
        assert _events(kube, "WriteRefused")
        attempts = kube.attempts["b"]
        loop.planning.full_next = True
        await loop.cycle()
        await loop.cycle()
        assert kube.attempts["b"] == attempts  # backed off: no new attempt before the back-off ends
        kube.refused.clear()
        loop.backoffs["b/capped"] = loop.backoffs["b/capped"].__class__(1, 0.0, loop.backoffs["b/capped"].refusal)
        await loop.cycle()
        assert len(_live(store, "b")) == 2
        assert "b/capped" not in loop.backoffs
        status = (store.get(Kind.POOL, "b/capped") or {})["status"]
        assert next(c for c in status["conditions"] if c["type"] == "Degraded")["reason"] != "Forbidden"

    asyncio.run(scenario())


def test_a_copycat_pod_elsewhere_is_never_counted_or_deleted() -> None:
    async def scenario() -> None:
        store = Store()
        kube = FakeKube(store)
        loop = _cluster(kube, store, [PoolBuilder("p", "a").cpu("m", replicas=2).obj()])
        await loop.cycle()
        kube.bind_all()
        await loop.cycle()
        plan_before = [(a.demand, a.node) for a in (loop.last_plan.assignments if loop.last_plan else ())]
        ours = _live(store, "a")
        copycat = copy.deepcopy(ours[0])
        copycat["metadata"].update(namespace="b", name="copycat", uid="uid-copycat", ownerReferences=[])
        store.apply_event(Kind.POD, "ADDED", kube._stamp(copycat))
        squatter = copy.deepcopy(ours[0])  # same namespace, our labels, no ownerReference
        squatter["metadata"].update(name="squatter", uid="uid-squatter")
        squatter["metadata"].pop("ownerReferences")
        store.apply_event(Kind.POD, "ADDED", kube._stamp(squatter))
        kube.deleting.clear()
        report = await loop.cycle()
        assert report.deleted == 0
        assert report.created == 0
        assert not kube.deleting
        assert sorted(p["metadata"]["name"] for p in _live(store, "a")) == sorted(
            [p["metadata"]["name"] for p in ours] + ["squatter"])
        status = (store.get(Kind.POOL, "a/p") or {})["status"]
        assert status["readyReplicas"] == 2
        assert status["servingReplicas"] == 2  # on cpu-0000, which is no KWOK fake node
        assert status["desiredReplicas"] == 2
        assert [(a.demand, a.node) for a in (loop.last_plan.assignments if loop.last_plan else ())] == plan_before
        warned = {e["involvedObject"]["name"] for e in _events(kube, "NotOwnedByPool")}
        assert warned == {"copycat", "squatter"}
        assert all(e["type"] == "Warning" for e in _events(kube, "NotOwnedByPool"))

    asyncio.run(scenario())


def test_a_mig_request_goes_out_in_the_cycle_that_plans_it() -> None:
    async def scenario() -> None:
        store = Store()
        kube = FakeKube(store)
        loop = _cluster(kube, store, [PoolBuilder("s", "a").mig("m", "3g.40gb", replicas=2, memory="30Gi").obj()])
        report = await loop.cycle()
        assert report.created == 2
        assert report.relabeled == 1  # not a cycle (or a resync) later
        node = store.get(Kind.NODE, "gpu-0000") or {}
        assert node["metadata"]["labels"][names.LABEL_MIG_CONFIG].startswith("gpupool-")
        assert node["metadata"]["labels"][names.LABEL_MIG_CONFIG_STATE] == "success"  # never written by us
        assert all(p["spec"].get("schedulingGates") for p in _live(store, "a"))
        kube.mig_manager()  # pending, then success, as NVIDIA's MIG manager reports them
        report = await loop.cycle()
        assert report.ungated == 2
        node = store.get(Kind.NODE, "gpu-0000") or {}
        assert names.ANN_MIG_LAYOUT_TARGET not in node["metadata"]["annotations"]
        assert names.ANN_MIG_LAYOUT in node["metadata"]["annotations"]

    asyncio.run(scenario())


def test_a_hand_edited_service_is_put_back() -> None:
    async def scenario() -> None:
        store = Store()
        kube = FakeKube(store)
        loop = _cluster(kube, store, [PoolBuilder("p", "a").cpu("m", replicas=1).obj()])
        await loop.cycle()
        (service,) = store.all(Kind.SERVICE)
        wanted = dict(service["spec"]["selector"])
        edited = copy.deepcopy(service)
        edited["spec"]["selector"] = {"app": "something-else"}
        store.apply_event(Kind.SERVICE, "MODIFIED", kube._stamp(edited))
        await loop.cycle()
        (repaired,) = store.all(Kind.SERVICE)
        assert repaired["spec"]["selector"] == wanted
        assert _events(kube, "ServiceRepaired")
        store.apply_event(Kind.SERVICE, "DELETED", kube._stamp(copy.deepcopy(repaired)))
        kube.objects.pop(next(k for k in kube.objects if "/services/" in k))
        await loop.cycle()
        assert len(store.all(Kind.SERVICE)) == 1  # deleted by hand: made again

    asyncio.run(scenario())


def test_metrics_give_desired_and_ready_replicas_per_pool_and_model() -> None:
    async def scenario() -> None:
        store = Store()
        kube = FakeKube(store)
        loop = _cluster(kube, store, [PoolBuilder("metered", "a").cpu("m", replicas=3).obj()])
        await loop.cycle()
        labels = {"namespace": "a", "pool": "metered", "model": "m"}
        assert REGISTRY.get_sample_value("gpupool_desired_replicas", labels) == 3
        assert REGISTRY.get_sample_value("gpupool_ready_replicas", labels) == 0
        kube.bind_all()
        await loop.cycle()
        assert REGISTRY.get_sample_value("gpupool_ready_replicas", labels) == 3
        assert (REGISTRY.get_sample_value("gpupool_placement_cycle_seconds_count") or 0) >= 2

    asyncio.run(scenario())
