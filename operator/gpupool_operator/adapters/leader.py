"""One active operator replica: leader election on a ``coordination.k8s.io/v1`` Lease, as client-go does it.

Why a Lease and not only kopf's peering: the placement loop is global and writes to many objects;
every replica keeps watching (so a standby has a warm cache), but only the Lease holder plans and
writes. The rules are client-go's ``leaderelection`` package:

* expiry is judged on the *local monotonic clock*: a candidate remembers when it last saw the
  Lease record (holder, renewTime, ...) change, and takes the Lease over only after it has stayed
  unchanged for ``leaseDurationSeconds``. A remote timestamp is never compared with the local
  clock, so skewed clocks cannot make two leaders;
* the holder renews every ``retry_s``; every update is guarded by ``resourceVersion``, so two
  candidates cannot both win;
* a holder that has not renewed within ``renew_deadline_s`` (< the lease duration) of its last
  successful renewal stops leading *at once*: :attr:`is_leader` is computed from the monotonic
  clock at each call, and the Kube adapter refuses every write while it is false. A replica
  frozen (SIGSTOP, a long GC pause) and resumed after another took over writes nothing;
* a replica that stops cleanly releases the Lease, so the standby takes over at once.

State is shared between the event loop and the Kube threads, so it is read and written under a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gpupool_operator.adapters.kube import Kube, KubeError, path_for

__all__ = ["LeaderElector", "default_identity"]

log = logging.getLogger("gpupool.leader")


def default_identity() -> str:
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def _fmt(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Holds (or waits for) the Lease ``namespace/name``; :attr:`is_leader` says whether to write."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str = "gpupool-operator",
        identity: str | None = None,
        lease_s: float = 15,
        renew_deadline_s: float | None = None,
        retry_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.lease_s = lease_s
        self.renew_deadline_s = renew_deadline_s if renew_deadline_s is not None else lease_s * 2 / 3
        self.retry_s = retry_s
        self.clock = clock
        self.wall = wall
        self.changed = asyncio.Event()
        self._lock = threading.Lock()
        self._record: tuple[Any, ...] | None = None  # the Lease spec last observed
        self._observed_at = 0.0  # monotonic time it was first seen
        self._duration = float(lease_s)
        self._holder: str | None = None
        self._renewed_at: float | None = None  # monotonic time of our last successful acquire/renew

    @property
    def path(self) -> str:
        return path_for("coordination.k8s.io/v1", "leases", self.name, self.namespace)

    @property
    def is_leader(self) -> bool:
        """Whether this replica holds the Lease and renewed it within the renew deadline (now)."""
        with self._lock:
            return self._renewed_at is not None and self.clock() - self._renewed_at < self.renew_deadline_s

    def may_write(self) -> bool:
        return self.is_leader

    def follows_live_leader(self) -> bool:
        """Whether another replica holds the Lease and was seen renewing it within the lease duration."""
        with self._lock:
            return bool(self._holder) and self._holder != self.identity and \
                self.clock() - self._observed_at < self._duration

    @property
    def holder(self) -> str | None:
        with self._lock:
            return self._holder

    def _observe(self, spec: dict[str, Any], now: float) -> None:
        record = tuple(spec.get(k) for k in ("holderIdentity", "renewTime", "acquireTime", "leaseTransitions",
                                              "leaseDurationSeconds"))
        with self._lock:
            if record != self._record:
                self._record, self._observed_at = record, now
            self._holder = spec.get("holderIdentity") or None
            self._duration = float(spec.get("leaseDurationSeconds") or self.lease_s)

    def _body(self, current: dict[str, Any] | None, transitions: int) -> dict[str, Any]:
        now = _fmt(self.wall())
        spec = (current or {}).get("spec") or {}
        mine = spec.get("holderIdentity") == self.identity
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": round(self.lease_s),
                "acquireTime": spec.get("acquireTime") if mine and spec.get("acquireTime") else now,
                "renewTime": now,
                "leaseTransitions": transitions,
            },
        }
        if current is not None:
            meta = current.get("metadata") or {}
            body["metadata"]["resourceVersion"] = meta["resourceVersion"]
            # a PUT replaces the object: keep what others put there (Helm's labels and release
            # annotations, so `helm upgrade` and `helm uninstall` still own the chart's Lease)
            for key in ("labels", "annotations", "ownerReferences"):
                if meta.get(key):
                    body["metadata"][key] = copy.deepcopy(meta[key])
        return body

    def try_acquire(self) -> bool:
        """One attempt to take or renew the Lease (blocking). Returns whether this replica leads."""
        now = self.clock()  # taken before the request: our deadline never outlasts the others' expiry
        try:
            current = self.kube.get(self.path)
            if current is None:
                created = self.kube.create(path_for("coordination.k8s.io/v1", "leases", namespace=self.namespace),
                                           self._body(None, 0))
                return self._renewed(created, now)
            spec = current.get("spec") or {}
            self._observe(spec, now)
            holder = spec.get("holderIdentity")
            if holder and holder != self.identity:
                with self._lock:
                    expired = now - self._observed_at >= self._duration
                if not expired:
                    return self._lost()
            transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
            return self._renewed(self.kube.request("PUT", self.path, self._body(current, transitions)), now)
        except KubeError as err:
            if err.status != 409:
                log.warning("lease %s/%s: %s", self.namespace, self.name, err)
            return self.is_leader  # could not renew: leading only until the renew deadline passes

    def _renewed(self, lease: dict[str, Any] | None, now: float) -> bool:
        if lease is None:  # lost a race to create it
            return self._lost()
        self._observe(lease.get("spec") or {}, now)
        with self._lock:
            self._renewed_at = now
        return True

    def _lost(self) -> bool:
        with self._lock:
            self._renewed_at = None
        return False

    def release(self) -> None:
        """Give the Lease up (blocking), so a standby takes over without waiting for it to expire."""
        if not self.is_leader:
            return
        self._lost()
        try:
            current = self.kube.get(self.path)
            if current is not None and (current.get("spec") or {}).get("holderIdentity") == self.identity:
                body = self._body(current, int(current["spec"].get("leaseTransitions") or 0))
                body["spec"].update(holderIdentity=None, leaseDurationSeconds=1)
                self.kube.request("PUT", self.path, body)
        except KubeError as err:
            log.warning("could not release lease %s/%s: %s", self.namespace, self.name, err)

    async def run(self, stop: asyncio.Event, on_change: Callable[[bool], None] | None = None) -> None:
        """Acquire and renew every ``retry_s`` until ``stop`` is set, then release. ``changed`` is
        set (on the event loop) whenever leadership changes, including a renew deadline passing."""
        was = False
        try:
            while not stop.is_set():
                await self.kube.run(self.try_acquire)
                now = self.is_leader
                if now != was:
                    log.info("%s leadership of lease %s/%s", "acquired" if now else "lost", self.namespace, self.name)
                    was = now
                    self.changed.set()
                    if on_change is not None:
                        on_change(now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.retry_s)
        finally:
            await self.kube.run(self.release)
            if was and on_change is not None:
                on_change(False)
