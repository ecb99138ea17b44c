"""The in-memory API (fake_api.FakeKube) held to the real API server: every kind of request the
operator's stages send, run the same way against both, with the same answers asserted.

FakeKube serves the fast loop tests (test_operator_loop.py) and the offline cycle benchmark; a
behaviour it gets wrong would let them pass where the operator fails. Each scenario below runs
twice: against FakeKube, whose store is fed with every result as the act stage's write-through
and the watches feed it, and against the real kube-apiserver of the local control plane.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fake_api import FakeKube
from operator_builders import PoolBuilder

from gpupool_operator.adapters.kube import Kube, KubeError, load_client, path_for
from gpupool_operator.adapters.store import Kind, Store
from gpupool_operator.api import API_VERSION

Obj = dict[str, Any]


@dataclass
class Api:
    kube: Kube
    namespace: str
    store: Store | None = None  # the fake's: fed with what the operator would see

    def seen(self, kind: Kind, obj: Obj) -> Obj:
        """What the act stage's write-through and the watch do with a write's result."""
        if self.store is not None:
            self.store.upsert(kind, obj)
        return obj

    def kubelet_done(self) -> None:
        """Deleted pods are gone (an unbound pod goes at once on the real server)."""
        if isinstance(self.kube, FakeKube):
            self.kube.finish_deletions()


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.cluster)])
def api(request: pytest.FixtureRequest) -> Iterator[Api]:
    if request.param == "fake":
        store = Store()
        yield Api(FakeKube(store), "contract", store)
        return
    cluster = request.getfixturevalue("control_plane")
    namespace = request.getfixturevalue("namespace")
    kube = Kube(load_client(cluster.kubeconfig))
    yield Api(kube, namespace)
    kube.close()


def _refused(call: Any, *args: Any) -> int:
    with pytest.raises(KubeError) as err:
        call(*args)
    return err.value.status


def test_pods_create_once_ungate_by_uid_and_delete_by_uid(api: Api) -> None:
    kube, ns = api.kube, api.namespace
    collection = path_for("v1", "pods", namespace=ns)
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "1"}},
            "spec": {"schedulingGates": [{"name": "gpupool.io/mig-layout"}, {"name": "someone-else"}],
                     "containers": [{"name": "c", "image": "registry.invalid/x"}]}}
    created = api.seen(Kind.POD, kube.create(collection, body) or {})
    uid = created["metadata"]["uid"]
    assert uid
    assert created["metadata"]["resourceVersion"]
    assert created["metadata"]["labels"] == {"a": "1"}
    assert kube.create(collection, body) is None  # the name exists: 409, never a duplicate
    assert kube.get(path_for("v1", "pods", "missing", ns)) is None
    path = path_for("v1", "pods", "p", ns)

    def ungate(test_uid: str) -> Obj:
        return kube.json_patch(path, [{"op": "test", "path": "/metadata/uid", "value": test_uid},
                                      {"op": "replace", "path": "/spec/schedulingGates",
                                       "value": [{"name": "someone-else"}]}])

    assert _refused(ungate, "uid-of-a-predecessor") == 422  # a same-named successor is never touched
    updated = api.seen(Kind.POD, ungate(uid))
    assert updated["spec"]["schedulingGates"] == [{"name": "someone-else"}]  # only our gate went
    assert not kube.delete(path, "uid-of-a-predecessor")  # 409: the precondition holds it
    assert kube.delete(path, uid)
    api.kubelet_done()
    assert not kube.delete(path, uid)  # gone: 404


def test_node_metadata_merge_patch_sets_and_removes_keys(api: Api) -> None:
    kube = api.kube
    name = f"contract-{uuid.uuid4().hex[:8]}"
    body = {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"keep": "1", "gone": "1"}, "annotations": {"old": "1"}}}
    api.seen(Kind.NODE, kube.create(path_for("v1", "nodes"), body) or {})
    try:
        patched = api.seen(Kind.NODE, kube.merge_patch(path_for("v1", "nodes", name), {"metadata": {
            "labels": {"nvidia.com/mig.config": "gpupool-abc", "gone": None},
            "annotations": {"gpupool.io/mig-layout-target": "[]", "old": None}}}))
        labels = patched["metadata"]["labels"]
        assert labels["keep"] == "1"
        assert labels["nvidia.com/mig.config"] == "gpupool-abc"
        assert "gone" not in labels
        annotations = patched["metadata"]["annotations"]  # (the TTL controller may add its own)
        assert annotations["gpupool.io/mig-layout-target"] == "[]"
        assert "old" not in annotations
    finally:
        if api.store is None:
            kube.delete(path_for("v1", "nodes", name))


def test_service_repair_is_guarded_by_resource_version(api: Api) -> None:
    kube, ns = api.kube, api.namespace
    body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "labels": {"a": "1"}},
            "spec": {"selector": {"app": "x", "edited": "by-hand"}, "ports": [{"name": "grpc", "port": 8001}]}}
    created = api.seen(Kind.SERVICE, kube.create(path_for("v1", "services", namespace=ns), body) or {})
    path = path_for("v1", "services", "s", ns)
    version = created["metadata"]["resourceVersion"]
    patch = {"metadata": {"labels": {"a": "2"}, "resourceVersion": version},
             "spec": {"selector": {"app": "y", "edited": None}, "ports": [{"name": "grpc", "port": 8001}]}}
    repaired = api.seen(Kind.SERVICE, kube.merge_patch(path, patch))
    assert repaired["spec"]["selector"] == {"app": "y"}
    assert repaired["metadata"]["labels"] == {"a": "2"}
    assert repaired["metadata"]["resourceVersion"] != version
    assert _refused(kube.merge_patch, path, patch) == 409  # somebody wrote it meanwhile: read again


def test_config_map_entries_are_added_under_its_resource_version(api: Api) -> None:
    kube, ns = api.kube, api.namespace
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "mig", "labels": {"app.kubernetes.io/managed-by": "Helm"}},
            "data": {"config.yaml": "version: v1\n", "other": "kept"}}
    created = kube.create(path_for("v1", "configmaps", namespace=ns), body) or {}
    assert kube.create(path_for("v1", "configmaps", namespace=ns), body) is None
    path = path_for("v1", "configmaps", "mig", ns)
    version = created["metadata"]["resourceVersion"]
    patched = kube.merge_patch(path, {"metadata": {"resourceVersion": version}, "data": {"config.yaml": "new"}})
    assert patched["data"] == {"config.yaml": "new", "other": "kept"}
    assert patched["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "Helm"}
    assert (kube.get(path) or {})["data"]["config.yaml"] == "new"
    stale = {"metadata": {"resourceVersion": version}, "data": {"config.yaml": "lost"}}
    assert _refused(kube.merge_patch, path, stale) == 409


def test_pool_status_is_written_through_its_subresource(api: Api) -> None:
    kube, ns = api.kube, api.namespace
    body = PoolBuilder("contract").cpu("m").obj()
    created = api.seen(Kind.POOL, kube.create(path_for(API_VERSION, "inferencepools", namespace=ns), body) or {})
    assert created["metadata"]["generation"] == 1
    status = {"observedGeneration": 1, "desiredReplicas": 1, "readyReplicas": 0}
    path = path_for(API_VERSION, "inferencepools", "contract", ns, "status")
    written = kube.merge_patch(path, {"status": status})
    assert {k: written["status"][k] for k in status} == status
    assert written["spec"] == created["spec"]
    assert written["metadata"]["generation"] == 1  # a status write is no new generation
    gone = path_for(API_VERSION, "inferencepools", "never-made", ns, "status")
    assert _refused(kube.merge_patch, gone, {"status": status}) == 404


def test_events_are_created(api: Api) -> None:
    kube, ns = api.kube, api.namespace
    body = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": f"e.{uuid.uuid4().hex[:8]}"},
            "involvedObject": {"kind": "InferencePool", "namespace": ns, "name": "x"},
            "reason": "Placed", "message": "m", "type": "Normal", "source": {"component": "gpupool-operator"}}
    event = kube.create(path_for("v1", "events", namespace=ns), body)
    assert event is not None
    assert event["reason"] == "Placed"
    assert kube.create(path_for("v1", "events", namespace=ns), body) is None
