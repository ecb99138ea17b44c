"""The GPUPoolConfig reports back on itself: an ``Accepted`` condition with a reason, per generation.

On the real control plane the operator accepts each generation of the cluster's config (the API
server already refused whatever its schema and CEL rules catch). A config the operator cannot use
gets there only past the API server (an older CRD, a hand-written object), so that case runs
through the in-memory API (held to the real server by test_fake_api_contract.py): the config is
refused with the reason, the last accepted one stays in force, and pools are still placed.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from fake_api import FakeKube
from operator_builders import PoolBuilder
from operator_helpers import condition, get_json, wait_until

from gpupool_operator.adapters.loop import PlacementLoop
from gpupool_operator.adapters.settings import OperatorSettings
from gpupool_operator.adapters.store import Kind, Store
from gpupool_operator.api import default_config
from gpupool_operator.local.cluster import LocalCluster

TIMEOUT = 60


def test_each_generation_of_the_config_is_accepted_with_its_reason(control_plane: LocalCluster, operator: Any) -> None:
    def accepted(generation: int | None = None) -> dict[str, Any] | None:
        obj = get_json(control_plane, "gpupoolconfig", "default")
        cond = condition(obj, "Accepted") or {}
        want = generation if generation is not None else obj["metadata"]["generation"]
        if (obj.get("status") or {}).get("observedGeneration") == want and cond.get("status") == "True":
            return {"generation": want, **cond}
        return None

    first = wait_until(accepted, TIMEOUT, "the config Accepted")
    assert first["reason"] == "ConfigLoaded"
    price = get_json(control_plane, "gpupoolconfig", "default")["spec"]["usdPerVcpuHour"]
    try:
        control_plane.kubectl("patch", "gpupoolconfig", "default", "--type=merge",
                              "-p", '{"spec": {"usdPerVcpuHour": "0.05"}}')
        second = wait_until(lambda: accepted(first["generation"] + 1), TIMEOUT, "the new generation Accepted")
        assert second["reason"] == "ConfigLoaded"
        assert second["message"] == f"generation {first['generation'] + 1} is in force"
        assert second["observedGeneration"] == first["generation"] + 1
    finally:
        control_plane.kubectl("patch", "gpupoolconfig", "default", "--type=merge",
                              "-p", f'{{"spec": {{"usdPerVcpuHour": "{price}"}}}}')


def test_a_config_the_operator_cannot_use_is_refused_and_the_last_good_one_stays() -> None:
    async def scenario() -> None:
        store = Store()
        kube = FakeKube(store)
        good = default_config().to_wire()
        good["metadata"].update(generation=1, uid="uid-config")
        kube.objects["/apis/gpupool.io/v1alpha1/gpupoolconfigs/default"] = good
        store.apply_event(Kind.CONFIG, "ADDED", kube._stamp(copy.deepcopy(good)))
        store.apply_event(Kind.NODE, "ADDED", kube._stamp({
            "metadata": {"name": "cpu-0000", "labels": {}, "uid": "uid-node"},
            "status": {"allocatable": {"cpu": "32", "memory": "128Gi"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}))
        loop = PlacementLoop(kube, store, OperatorSettings())
        loop._seeded = True
        kube.feed = loop.observer.feed

        def config_condition() -> dict[str, Any]:
            return condition(store.get(Kind.CONFIG, "default") or {}, "Accepted") or {}

        await loop.cycle()
        assert config_condition()["reason"] == "ConfigLoaded"
        bad = copy.deepcopy(store.get(Kind.CONFIG, "default") or {})
        bad["metadata"]["generation"] = 2
        bad["spec"]["usdPerVcpuHour"] = "-1"  # the CRD's pattern refuses it; an older CRD might not
        store.apply_event(Kind.CONFIG, "MODIFIED", kube._stamp(bad))
        body = PoolBuilder("p", "a").cpu("m", replicas=2).obj()
        body["metadata"].update(uid="uid-pool", generation=1)
        store.apply_event(Kind.POOL, "ADDED", kube._stamp(body))
        report = await loop.cycle()
        cond = config_condition()
        assert cond["status"] == "False"
        assert cond["reason"] == "ConfigRejected"
        assert cond["message"].startswith("GPUPoolConfig spec.usdPerVcpuHour: '-1'"), cond  # the field, in words
        assert cond["message"].endswith("; the last accepted configuration stays in force"), cond
        assert (store.get(Kind.CONFIG, "default") or {})["status"]["observedGeneration"] == 2
        assert report.created == 2  # pools are placed meanwhile, at the last accepted prices

    asyncio.run(scenario())
