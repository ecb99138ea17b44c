"""Pools kept apart on the real control plane: ownership is proof, names never collide, one pool's
refused writes never stall another, and every example pool runs where the plan put it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_builders import PoolBuilder
from operator_helpers import apply, condition, get_json, live_pods, pool, running, settled, wait_until
from prometheus_client import REGISTRY

from gpupool_operator.adapters import names
from gpupool_operator.local.cluster import LocalCluster

TIMEOUT = 90
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def other_namespace(control_plane: LocalCluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "inferencepools", "--all", "-n", name, "--wait=true", "--timeout=60s",
                          check=False)
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _owned(cluster: LocalCluster, namespace: str, uid: str) -> list[dict[str, Any]]:
    return [p for p in live_pods(cluster, namespace)
            if any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])]


def test_a_copycat_pod_in_another_namespace_changes_nothing(
    control_plane: LocalCluster, operator: Any, namespace: str, other_namespace: str
) -> None:
    apply(control_plane, PoolBuilder("a").cpu("m", replicas=2).obj(), namespace)
    wait_until(lambda: settled(control_plane, namespace, "a", 2), TIMEOUT, "pool a settled")
    before = {p["metadata"]["uid"] for p in live_pods(control_plane, namespace)}
    ours = live_pods(control_plane, namespace)[0]
    copycat = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "copycat", "labels": ours["metadata"]["labels"],
                     "annotations": ours["metadata"]["annotations"]},  # gpupool.io/demand names pool a
        "spec": {"nodeName": ours["spec"]["nodeName"],
                 "containers": [{"name": "c", "image": "x", "resources": ours["spec"]["containers"][0]["resources"]}]},
    }
    apply(control_plane, copycat, other_namespace)

    def warned() -> list[dict[str, Any]]:
        events = get_json(control_plane, "events", "-n", other_namespace)["items"]
        return [e for e in events if e["reason"] == "NotOwnedByPool" and e["involvedObject"]["name"] == "copycat"]

    (event,) = wait_until(warned, TIMEOUT, "a Warning on the copycat pod")
    assert event["type"] == "Warning"
    assert {p["metadata"]["uid"] for p in live_pods(control_plane, namespace)} == before  # not one replica moved
    assert settled(control_plane, namespace, "a", 2)
    obj = pool(control_plane, namespace, "a")
    pods = {r["pod"] for m in obj["status"]["models"] for r in m["replicas"]}
    assert "copycat" not in pods
    assert [p["metadata"]["name"] for p in live_pods(control_plane, other_namespace)] == ["copycat"]  # never deleted


def test_pool_and_model_names_that_join_alike_and_the_longest_names_never_collide(
    control_plane: LocalCluster, operator: Any, namespace: str
) -> None:
    longest = "l" * 253  # the longest legal InferencePool name
    bodies = [PoolBuilder("a-b").cpu("c").obj(), PoolBuilder("a").cpu("b-c").obj(),
              PoolBuilder(longest).cpu("m" * 40).obj()]
    for body in bodies:
        apply(control_plane, body, namespace)

    def running_each() -> dict[str, list[dict[str, Any]]] | None:
        out = {}
        for body in bodies:
            name = body["metadata"]["name"]
            uid = pool(control_plane, namespace, name)["metadata"]["uid"]
            pods = _owned(control_plane, namespace, uid)
            if len(pods) != 1 or not running(pods[0]):
                return None
            out[name] = pods
        return out

    found = wait_until(running_each, TIMEOUT, "one running replica per pool")
    pod_names = [p["metadata"]["name"] for pods in found.values() for p in pods]
    assert len(set(pod_names)) == 3
    assert all(len(n) <= 63 for n in pod_names)
    services = get_json(control_plane, "services", "-n", namespace)["items"]
    assert len({s["metadata"]["name"] for s in services}) == 3
    for body in bodies:  # one create per replica: no create loop on a name another pool took
        name = body["metadata"]["name"]
        uid = pool(control_plane, namespace, name)["metadata"]["uid"]
        model = body["spec"]["models"][0]["name"]
        assert found[name][0]["metadata"]["name"] == names.pod_name(namespace, name, uid, model, 0)
    events = get_json(control_plane, "events", "-n", namespace)["items"]
    assert not [e for e in events if e["reason"] == "WriteRefused"]


def test_a_quota_that_refuses_one_pool_stalls_no_other(
    control_plane: LocalCluster, operator: Any, namespace: str, other_namespace: str
) -> None:
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"},
             "spec": {"hard": {"pods": "0"}}}
    apply(control_plane, quota, other_namespace)
    apply(control_plane, PoolBuilder("capped").cpu("m", replicas=2).obj(), other_namespace)
    apply(control_plane, PoolBuilder("free").cpu("m", replicas=2).obj(), namespace)

    def refused() -> dict[str, Any] | None:
        cond = condition(pool(control_plane, other_namespace, "capped"), "Degraded") or {}
        return cond if cond.get("status") == "True" and cond.get("reason") == "Forbidden" else None

    cond = wait_until(refused, TIMEOUT, "the refused pool Degraded with the API server's reason")
    assert "exceeded quota" in cond["message"]
    assert "retrying" in cond["message"]
    wait_until(lambda: settled(control_plane, namespace, "free", 2), TIMEOUT, "the other pool placed meanwhile")
    events = get_json(control_plane, "events", "-n", other_namespace)["items"]
    assert any(e["reason"] == "WriteRefused" and e["type"] == "Warning" for e in events)
    assert not live_pods(control_plane, other_namespace)
    # the operator runs in this process: its failure counter names the stage and the server's reason
    assert (REGISTRY.get_sample_value("gpupool_reconcile_failures_total",
                                      {"stage": "act", "reason": "Forbidden"}) or 0) >= 1

    control_plane.kubectl("delete", "resourcequota", "no-pods", "-n", other_namespace)
    wait_until(lambda: settled(control_plane, other_namespace, "capped", 2), TIMEOUT,
               "the refused pool placed once the quota allows it (after its back-off)")
    assert (condition(pool(control_plane, other_namespace, "capped"), "Degraded") or {})["status"] == "False"


def test_every_example_pool_runs_where_the_plan_put_it(
    control_plane: LocalCluster, operator: Any, namespace: str
) -> None:
    docs = [d for path in sorted((ROOT / "examples" / "pools").glob("*.yaml"))
            for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "InferencePool"]
    for doc in docs:
        apply(control_plane, doc, namespace)

    def all_running() -> bool:
        pods = live_pods(control_plane, namespace)
        placed = 0
        for doc in docs:
            status = pool(control_plane, namespace, doc["metadata"]["name"]).get("status") or {}
            placed += sum(len(m.get("replicas", [])) for m in status.get("models", []))
        return bool(pods) and len(pods) == placed and all(running(p) for p in pods)

    wait_until(all_running, TIMEOUT * 2, "every placed replica Running on its planned node")
    for pod in live_pods(control_plane, namespace):
        assert pod["spec"]["nodeName"] == pod["metadata"]["annotations"]["gpupool.io/node"]
    events = get_json(control_plane, "events", "-n", namespace)["items"]
    refused = [e["message"] for e in events if e["reason"] == "Unschedulable"]
    assert not refused, refused  # kube-scheduler agreed with every placement the first time
