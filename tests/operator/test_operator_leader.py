"""Leader election on a Lease, with an in-memory API (the real-cluster handover is in test_operator_restart)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from gpupool_operator.adapters.kube import Kube, KubeError
from gpupool_operator.adapters.leader import LeaderElector


class LeaseApi(Kube):
    """Just enough of the API server for one Lease: create, get, and PUT guarded by resourceVersion."""

    def __init__(self) -> None:
        super().__init__(api_client=None, workers=1)
        self.lease: dict[str, Any] | None = None
        self.version = 0

    def request(self, method: str, path: str, body: Any = None, query: Any = None,
                content_type: str = "application/json") -> dict[str, Any]:
        if method == "GET":
            if self.lease is None:
                raise KubeError(404, "not found")
            return copy.deepcopy(self.lease)
        if method == "POST":
            if self.lease is not None:
                raise KubeError(409, "already exists")
        elif method == "PUT":
            assert self.lease is not None
            if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
                raise KubeError(409, "conflict")
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.lease)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_one_holder_takeover_after_expiry_and_release() -> None:
    api, clock = LeaseApi(), Clock()
    a = LeaderElector(api, "ns", identity="a", lease_s=10, clock=clock)
    b = LeaderElector(api, "ns", identity="b", lease_s=10, clock=clock)
    assert a.try_acquire()
    assert not b.try_acquire()
    clock.now += timedelta(seconds=5)
    assert a.try_acquire()  # renewal
    clock.now += timedelta(seconds=9)
    assert not b.try_acquire()  # renewed 9 s ago: still a's
    clock.now += timedelta(seconds=2)
    assert b.try_acquire()  # a stopped renewing 11 s ago
    assert api.lease is not None
    assert api.lease["spec"]["leaseTransitions"] == 1
    assert not a.try_acquire()
    assert not a.is_leader
    b.release()
    assert a.try_acquire()  # released: no need to wait for expiry


def test_a_lost_race_is_not_leadership() -> None:
    api, clock = LeaseApi(), Clock()
    a = LeaderElector(api, "ns", identity="a", lease_s=10, clock=clock)
    assert a.try_acquire()
    clock.now += timedelta(seconds=30)
    stale = api.request("GET", a.path)
    b = LeaderElector(api, "ns", identity="b", lease_s=10, clock=clock)
    c = LeaderElector(api, "ns", identity="c", lease_s=10, clock=clock)
    assert b.try_acquire()
    original_get = api.request

    def stale_get(method: str, path: str, body: Any = None, query: Any = None,
                  content_type: str = "application/json") -> dict[str, Any]:
        return copy.deepcopy(stale) if method == "GET" else original_get(method, path, body, query, content_type)

    api.request = stale_get  # type: ignore[method-assign]
    assert not c.try_acquire()  # c read the expired Lease too, but b's update won: 409
    assert b.is_leader
