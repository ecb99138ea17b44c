"""The operator on the real control plane: placement, scaling, deletion, degraded pools, node changes.

kube-scheduler (not the operator) binds every replica; the tests check it lands where the plan
said, with the resources the plan chose.
"""

from __future__ import annotations

from typing import Any

from operator_builders import PoolBuilder, fake_gpu_node
from operator_helpers import apply, condition, get_json, live_pods, pool, running, settled, wait_until

from gpupool_operator.adapters import names
from gpupool_operator.adapters.inventory import parse_cpu
from gpupool_operator.local.cluster import LocalCluster
from gpupool_operator.local.nodes import register_nodes

TIMEOUT = 60


def _models(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in (obj.get("status") or {}).get("models", [])}


def test_replicas_run_where_the_plan_placed_them(control_plane: LocalCluster, operator: Any, namespace: str) -> None:
    body = PoolBuilder("mix").cpu("embed", cores=2, replicas=2).mig("vision", "1g.10gb", replicas=2) \
        .gpu("llm", "H100-80GB", replicas=1, memory="60Gi").obj()
    apply(control_plane, body, namespace)
    wait_until(lambda: settled(control_plane, namespace, "mix", 5), TIMEOUT, "5 replicas ready")

    obj = pool(control_plane, namespace, "mix")
    models = _models(obj)
    placed = {r["pod"]: r for m in models.values() for r in m["replicas"]}
    assert len(placed) == 5
    for pod in live_pods(control_plane, namespace):
        name = pod["metadata"]["name"]
        ann = pod["metadata"]["annotations"]
        assert running(pod)
        assert pod["spec"]["nodeName"] == ann["gpupool.io/node"] == placed[name]["node"], name
        limits = pod["spec"]["containers"][0]["resources"]["limits"]
        resource = placed[name]["resource"]
        if resource == "cpu":
            assert parse_cpu(limits["cpu"]) == 2000
        else:
            assert limits[resource] == str(placed[name]["count"])
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "InferencePool"
        env = {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0]["env"]}
        worker_env = {"GPUPOOL_PRICE_PER_HOUR", "GPUPOOL_DEVICE_SHARE", "GPUPOOL_ACCELERATOR", "GPUPOOL_MIG_PROFILE"}
        assert worker_env <= set(env)
        assert not pod["spec"].get("schedulingGates")
    assert {r["resource"] for r in models["vision"]["replicas"]} == {"nvidia.com/mig-1g.10gb"}
    assert {r["resource"] for r in models["llm"]["replicas"]} == {"nvidia.com/gpu"}
    assert float(obj["status"]["usdPerHour"]) > 0
    assert condition(obj, "Placed")["status"] == "True"  # type: ignore[index]
    assert condition(obj, "Degraded")["status"] == "False"  # type: ignore[index]
    services = {s["metadata"]["name"] for s in get_json(control_plane, "services", "-n", namespace)["items"]}
    uid = obj["metadata"]["uid"]
    assert services == {names.service_name(namespace, "mix", uid, m) for m in ("embed", "vision", "llm")}
    reasons = {e["reason"] for e in get_json(control_plane, "events", "-n", namespace)["items"]}
    assert "Placed" in reasons


def test_scale_up_and_down(control_plane: LocalCluster, operator: Any, namespace: str) -> None:
    apply(control_plane, PoolBuilder("scale").cpu("m", replicas=1).obj(), namespace)
    wait_until(lambda: settled(control_plane, namespace, "scale", 1), TIMEOUT, "1 replica")
    control_plane.kubectl("patch", "inferencepool", "scale", "-n", namespace, "--type=json",
                          "-p", '[{"op":"replace","path":"/spec/models/0/minReplicas","value":4}]')
    wait_until(lambda: settled(control_plane, namespace, "scale", 4), TIMEOUT, "4 replicas")
    uid = pool(control_plane, namespace, "scale")["metadata"]["uid"]
    pod_names = sorted(p["metadata"]["name"] for p in live_pods(control_plane, namespace))
    assert pod_names == sorted(names.pod_name(namespace, "scale", uid, "m", i) for i in range(4))
    control_plane.kubectl("patch", "inferencepool", "scale", "-n", namespace, "--type=json",
                          "-p", '[{"op":"replace","path":"/spec/models/0/minReplicas","value":2}]')
    wait_until(lambda: settled(control_plane, namespace, "scale", 2), TIMEOUT, "2 replicas")
    assert len(live_pods(control_plane, namespace)) == 2


def test_deleting_a_pool_removes_what_it_created(control_plane: LocalCluster, operator: Any, namespace: str) -> None:
    apply(control_plane, PoolBuilder("gone").cpu("a", replicas=2).mig("b", "1g.10gb").obj(), namespace)
    wait_until(lambda: settled(control_plane, namespace, "gone", 3), TIMEOUT, "3 replicas")
    control_plane.kubectl("delete", "inferencepool", "gone", "-n", namespace, "--timeout=60s")
    wait_until(lambda: not live_pods(control_plane, namespace), TIMEOUT, "pods deleted")
    wait_until(lambda: not get_json(control_plane, "services", "-n", namespace)["items"], TIMEOUT, "services deleted")


def test_a_service_deleted_by_hand_comes_back(control_plane: LocalCluster, operator: Any, namespace: str) -> None:
    apply(control_plane, PoolBuilder("svc").cpu("a", replicas=1).obj(), namespace)
    wait_until(lambda: settled(control_plane, namespace, "svc", 1), TIMEOUT, "1 replica")
    first = wait_until(lambda: get_json(control_plane, "services", "-n", namespace)["items"], TIMEOUT, "the Service")
    assert len(first) == 1
    name, uid = first[0]["metadata"]["name"], first[0]["metadata"]["uid"]
    control_plane.kubectl("delete", "service", name, "-n", namespace, "--timeout=60s")

    def recreated() -> list[dict[str, Any]]:
        items = get_json(control_plane, "services", "-n", namespace)["items"]
        return [s for s in items if s["metadata"]["name"] == name and s["metadata"]["uid"] != uid]

    again = wait_until(recreated, TIMEOUT, "the Service made again after it was deleted by hand")
    assert again[0]["spec"]["selector"] == first[0]["spec"]["selector"]
    assert again[0]["metadata"]["ownerReferences"][0]["name"] == "svc"
    control_plane.kubectl("delete", "inferencepool", "svc", "-n", namespace, "--timeout=60s")


def test_a_hand_edited_service_selector_is_put_back(
    control_plane: LocalCluster, operator: Any, namespace: str
) -> None:
    apply(control_plane, PoolBuilder("sel").cpu("a", replicas=1).obj(), namespace)
    wait_until(lambda: settled(control_plane, namespace, "sel", 1), TIMEOUT, "1 replica")
    (service,) = wait_until(lambda: get_json(control_plane, "services", "-n", namespace)["items"], TIMEOUT,
                            "the Service")
    name, selector = service["metadata"]["name"], service["spec"]["selector"]
    control_plane.kubectl("patch", "service", name, "-n", namespace, "--type=merge",
                          "-p", '{"spec":{"selector":{"app":"somewhere-else","gpupool.io/model":"other"}}}')

    def repaired() -> bool:
        current = get_json(control_plane, "service", name, "-n", namespace)
        return bool(current["spec"]["selector"] == selector)

    wait_until(repaired, TIMEOUT, "the selector put back")
    events = get_json(control_plane, "events", "-n", namespace)["items"]
    assert any(e["reason"] == "ServiceRepaired" and e["type"] == "Warning" for e in events)


def test_unplaceable_pool_is_degraded_with_the_reason(
    control_plane: LocalCluster, operator: Any, namespace: str
) -> None:
    apply(control_plane, PoolBuilder("nohw").gpu("llm", "GB200", memory="100Gi").obj(), namespace)

    def degraded() -> dict[str, Any] | None:
        cond = condition(pool(control_plane, namespace, "nohw"), "Degraded")
        return cond if cond and cond["status"] == "True" else None

    cond = wait_until(degraded, TIMEOUT, "Degraded=True")
    assert cond["reason"] == "Unplaceable"
    assert "no accepted accelerator" in cond["message"] or "no shape" in cond["message"]
    obj = pool(control_plane, namespace, "nohw")
    assert condition(obj, "Placed")["status"] == "False"  # type: ignore[index]
    assert _models(obj)["llm"]["message"]
    assert not live_pods(control_plane, namespace)
    events = get_json(control_plane, "events", "-n", namespace)["items"]
    assert any(e["reason"] == "Unplaceable" and e["type"] == "Warning" for e in events)


def test_node_added_cordoned_and_removed_trigger_replanning(
    control_plane: LocalCluster, operator: Any, namespace: str
) -> None:
    # H200s are in no pool of the shared cluster: the pool waits, Degraded, until one appears.
    apply(control_plane, PoolBuilder("h200").gpu("llm", "H200-141GB", memory="100Gi").obj(), namespace)
    wait_until(lambda: (condition(pool(control_plane, namespace, "h200"), "Degraded") or {}).get("status") == "True",
               TIMEOUT, "Degraded before the node exists")
    nodes = [fake_gpu_node(f"h200-test-{i:04d}", "H200-141GB", gpus=2) for i in range(2)]
    try:
        register_nodes(control_plane.api_client(), nodes[:1], progress=None)
        wait_until(lambda: settled(control_plane, namespace, "h200", 1), TIMEOUT, "placed on the new node")
        (first,) = live_pods(control_plane, namespace)
        assert first["spec"]["nodeName"] == "h200-test-0000"

        register_nodes(control_plane.api_client(), nodes[1:], progress=None)
        control_plane.kubectl("cordon", "h200-test-0000")

        def moved() -> bool:
            live = live_pods(control_plane, namespace)
            return len(live) == 1 and running(live[0]) and live[0]["spec"]["nodeName"] == "h200-test-0001"

        wait_until(moved, TIMEOUT, "replica moved off the cordoned node")
        wait_until(lambda: settled(control_plane, namespace, "h200", 1), TIMEOUT, "settled after the move")

        control_plane.kubectl("delete", "node", "h200-test-0001", "--wait=true", "--timeout=60s")

        def replaced() -> bool:
            cond = condition(pool(control_plane, namespace, "h200"), "Degraded") or {}
            return cond.get("status") == "True" and not [
                p for p in live_pods(control_plane, namespace) if p["spec"].get("nodeName") == "h200-test-0001"
            ]

        wait_until(replaced, TIMEOUT, "lost replica noticed (only a cordoned H200 is left)")
        control_plane.kubectl("uncordon", "h200-test-0000")
        wait_until(lambda: settled(control_plane, namespace, "h200", 1), TIMEOUT, "back on the uncordoned node")
    finally:
        control_plane.kubectl("delete", "node", "h200-test-0000", "h200-test-0001", "--ignore-not-found",
                              check=False)


def test_a_replica_the_scheduler_refuses_is_planned_elsewhere(
    control_plane: LocalCluster, operator: Any, namespace: str
) -> None:
    # The node advertises three 2g.24gb slices, but its kubelet takes no more pods (allocatable
    # pods 0, a limit placement does not model): kube-scheduler refuses the replica; the operator
    # must not retry forever. (A device plugin advertising fewer slices than the labels promise is
    # no longer a refusal: placement reads allocatable, so such a node is never chosen.)
    node_name = "nvlbad-mig-0000"
    node = fake_gpu_node(node_name, "H100-NVL-94GB", gpus=1, mig_strategy="mixed", layouts=[{"2g.24gb": 3}])
    register_nodes(control_plane.api_client(), [node], progress=None)
    try:
        control_plane.kubectl("patch", "node", node_name, "--subresource=status", "--type=merge",
                              "-p", '{"status":{"allocatable":{"pods":"0"}}}')
        apply(control_plane, PoolBuilder("refused").mig("m", "2g.24gb").obj(), namespace)

        # The pool is Degraded for a moment before the operator's cache has the new node (nowhere to
        # place yet), so the refusal comes first; only the Degraded after it counts.
        def refused() -> bool:
            events = get_json(control_plane, "events", "-n", namespace)["items"]
            return any(e["reason"] == "Unschedulable" and e["type"] == "Warning" for e in events)

        wait_until(refused, TIMEOUT, "an Unschedulable warning for the refused replica")

        def degraded() -> dict[str, Any] | None:
            cond = condition(pool(control_plane, namespace, "refused"), "Degraded") or {}
            return cond if cond.get("status") == "True" and not live_pods(control_plane, namespace) else None

        cond = wait_until(degraded, TIMEOUT, "Degraded once the refused node is avoided")
        assert cond["reason"] == "InsufficientCapacity"
    finally:
        control_plane.kubectl("delete", "node", node_name, "--ignore-not-found", check=False)
