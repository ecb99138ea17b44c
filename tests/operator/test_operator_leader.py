"""Leader election with client-go's semantics, driven by a hand-moved monotonic clock.

Each scenario runs twice: against the in-memory Lease API (tests/operator/fake_api.py) and against
the real API server, so the fake is held to what the server does (create, 409 on a stale
``resourceVersion``, null holder on release). The two-process SIGSTOP test is in
``test_operator_restart.py``.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fake_api import FakeLeases

from gpupool_operator.adapters.kube import Kube, KubeError, NotLeader, load_client, path_for
from gpupool_operator.adapters.leader import LeaderElector


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FlakyKube(Kube):
    """The real API server, with updates that can be made to fail (the network between)."""

    def __init__(self, client: Any) -> None:
        super().__init__(client, workers=1)
        self.fail_puts = False

    def send(self, method: str, path: str, body: Any, query: Any, content_type: str) -> dict[str, Any]:
        if method == "PUT" and self.fail_puts:
            raise KubeError(0, "connection refused", "Unreachable")
        return super().send(method, path, body, query, content_type)


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.cluster)])
def api(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "fake":
        yield FakeLeases()
        return
    cluster = request.getfixturevalue("cluster")
    kube = FlakyKube(load_client(cluster.kubeconfig))
    yield kube
    kube.close()


def _electors(api: Any, clock: Clock, *ids: str, **kw: Any) -> list[LeaderElector]:
    name = f"test-{uuid.uuid4().hex[:8]}"
    return [LeaderElector(api, "default", name=name, identity=i, lease_s=10, clock=clock, **kw) for i in ids]


def test_one_holder_takeover_after_the_record_stays_unchanged_and_release(api: Any) -> None:
    clock = Clock()
    a, b = _electors(api, clock, "a", "b")
    assert a.try_acquire()
    assert not b.try_acquire()  # b sees a's record now
    clock.now += 5
    assert a.try_acquire()  # renewal: the record changes
    clock.now += 4
    assert not b.try_acquire()  # b sees the renewed record: its clock for it starts now
    clock.now += 9
    assert not b.try_acquire()  # unchanged for 9 s of b's clock: still a's
    assert not a.is_leader  # a has not renewed for 13 s > its renew deadline (6.7 s): it stopped
    clock.now += 1.5
    assert b.try_acquire()  # unchanged for 10.5 s: b takes over
    assert b.is_leader
    assert not a.try_acquire()  # a sees b's new record and waits
    lease = api.request("GET", b.path)
    assert lease["spec"]["holderIdentity"] == "b"
    assert lease["spec"]["leaseTransitions"] == 1
    b.release()
    assert not b.is_leader
    assert a.try_acquire()  # released: no need to wait for expiry


def test_remote_timestamps_never_decide_expiry(api: Any) -> None:
    """b's wall clock is an hour ahead (a's renewTime looks stale to it) and c's an hour behind:
    both wait for a's record to stay unchanged for the lease duration on their own clocks."""
    clock = Clock()
    real = datetime.now(UTC)
    a, = _electors(api, clock, "a")
    b = LeaderElector(api, "default", name=a.name, identity="b", lease_s=10, clock=clock,
                      wall=lambda: real + timedelta(hours=1))
    c = LeaderElector(api, "default", name=a.name, identity="c", lease_s=10, clock=clock,
                      wall=lambda: real - timedelta(hours=1))
    assert a.try_acquire()
    assert not b.try_acquire()
    assert not c.try_acquire()
    for _ in range(3):
        clock.now += 3
        assert a.try_acquire()
        assert not b.try_acquire()
        assert not c.try_acquire()
    clock.now += 10.5  # a stopped renewing
    assert b.try_acquire()
    assert not c.try_acquire()


def test_a_leader_that_cannot_renew_stops_writing_at_its_deadline(api: Any) -> None:
    clock = Clock()
    a, = _electors(api, clock, "a")
    fenced = FakeLeases()
    fenced.fence = a.may_write
    assert a.try_acquire()
    assert fenced.create("/api/v1/namespaces/default/configmaps", {"metadata": {"name": "x"}}) is not None
    api.fail_puts = True
    clock.now += 3
    assert a.try_acquire()  # the renewal failed, but the deadline (6.7 s after the last one) is ahead
    clock.now += 3.8  # 6.8 s since the last renewal
    assert not a.try_acquire()
    assert not a.is_leader
    with pytest.raises(NotLeader):
        fenced.create("/api/v1/namespaces/default/configmaps", {"metadata": {"name": "y"}})
    assert fenced.fenced == 1
    assert fenced.get("/api/v1/namespaces/default/configmaps/x") is not None  # reads still go
    api.fail_puts = False
    assert a.try_acquire()  # nobody else took it: renewing works again
    assert a.may_write()


def test_a_lost_race_is_not_leadership(api: Any) -> None:
    clock = Clock()
    a, b, c = _electors(api, clock, "a", "b", "c")
    assert a.try_acquire()
    assert not b.try_acquire()
    assert not c.try_acquire()
    clock.now += 30  # a is gone
    stale = api.request("GET", a.path)
    assert b.try_acquire()
    original = api.request

    def stale_get(method: str, path: str, body: Any = None, query: Any = None,
                  content_type: str = "application/json") -> dict[str, Any]:
        if method == "GET":
            return copy.deepcopy(stale)
        result: dict[str, Any] = original(method, path, body, query, content_type)
        return result

    api.request = stale_get
    assert not c.try_acquire()  # c read the expired Lease too, but b's update won: 409
    assert b.is_leader


def test_renewal_and_release_keep_the_leases_labels_and_annotations(api: Any) -> None:
    """The chart makes the Lease (Helm's labels and release annotations): the operator's PUTs keep
    them, so ``helm upgrade`` and ``helm uninstall`` still know it as the release's."""
    clock = Clock()
    (a,) = _electors(api, clock, "a")
    helm_meta = {"labels": {"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": "gp"},
                 "annotations": {"meta.helm.sh/release-name": "gp", "meta.helm.sh/release-namespace": "default"}}
    api.create(path_for("coordination.k8s.io/v1", "leases", namespace="default"),
               {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": a.name, "namespace": "default", **copy.deepcopy(helm_meta)}, "spec": {}})
    assert a.try_acquire()  # takes the chart's empty Lease
    clock.now += 3
    assert a.try_acquire()  # renews it
    for step in ("renewed", "released"):
        lease = api.request("GET", a.path)
        assert lease["metadata"]["labels"] == helm_meta["labels"], step
        assert lease["metadata"]["annotations"] == helm_meta["annotations"], step
        a.release()
    assert api.request("GET", a.path)["spec"].get("holderIdentity") is None
