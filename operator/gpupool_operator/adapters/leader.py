"""One active operator replica: leader election on a ``coordination.k8s.io/v1`` Lease.

Why a Lease and not only kopf's peering: the placement loop is global and writes to many objects;
every replica keeps watching (so a standby has a warm cache), but only the Lease holder plans and
writes. The protocol is client-go's: the holder renews ``renewTime`` every ``renew_s``; another
replica takes the Lease over only after ``leaseDurationSeconds`` without renewal, with an update
guarded by ``resourceVersion`` so two candidates cannot both win. A replica that fails to renew
before its lease runs out steps down by itself; one that stops cleanly releases the Lease so the
standby takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from gpupool_operator.adapters.kube import Kube, KubeError, path_for

__all__ = ["LeaderElector", "default_identity"]

log = logging.getLogger("gpupool.leader")


def default_identity() -> str:
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def _fmt(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(raw: str | None) -> datetime | None:
    if not raw:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(raw, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


class LeaderElector:
    """Holds (or waits for) the Lease ``namespace/name``; ``is_leader`` says whether to act."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str = "gpupool-operator",
        identity: str | None = None,
        lease_s: int = 15,
        renew_s: float = 2.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.lease_s = lease_s
        self.renew_s = renew_s
        self.clock = clock
        self.is_leader = False
        self._held_until: datetime | None = None
        self.changed = asyncio.Event()

    @property
    def path(self) -> str:
        return path_for("coordination.k8s.io/v1", "leases", self.name, self.namespace)

    def _body(self, current: dict[str, Any] | None, now: datetime, transitions: int) -> dict[str, Any]:
        acquire = now
        if current is not None and current.get("spec", {}).get("holderIdentity") == self.identity:
            acquire = _parse(current["spec"].get("acquireTime")) or now
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.lease_s,
                "acquireTime": _fmt(acquire),
                "renewTime": _fmt(now),
                "leaseTransitions": transitions,
            },
        }
        if current is not None:
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return body

    def try_acquire(self) -> bool:
        """One attempt to take or renew the Lease (blocking). Returns whether this replica holds it."""
        now = self.clock()
        try:
            current = self.kube.get(self.path)
            if current is None:
                created = self.kube.create(
                    path_for("coordination.k8s.io/v1", "leases", namespace=self.namespace),
                    self._body(None, now, 0),
                )
                return self._won(created is not None, now)
            spec = current.get("spec", {})
            holder = spec.get("holderIdentity")
            renewed = _parse(spec.get("renewTime"))
            duration = int(spec.get("leaseDurationSeconds") or self.lease_s)
            expired = renewed is None or renewed + timedelta(seconds=duration) < now
            if holder and holder != self.identity and not expired:
                return self._won(False, now)
            transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
            self.kube.request("PUT", self.path, self._body(current, now, transitions))
            return self._won(True, now)
        except KubeError as err:
            if err.status != 409:
                log.warning("lease %s/%s: %s", self.namespace, self.name, err)
            # Could not renew: keep acting only while the last renewal is still valid.
            still = self._held_until is not None and now < self._held_until
            return self._won(still, now, renewed=False)

    def _won(self, held: bool, now: datetime, renewed: bool = True) -> bool:
        if held and renewed:
            self._held_until = now + timedelta(seconds=self.lease_s * 2 / 3)
        if not held:
            self._held_until = None
        if held != self.is_leader:
            log.info("%s leadership of lease %s/%s", "acquired" if held else "lost", self.namespace, self.name)
            self.is_leader = held
            self.changed.set()
        return held

    def release(self) -> None:
        """Give the Lease up (blocking), so a standby takes over without waiting for it to expire."""
        if not self.is_leader:
            return
        self.is_leader = False
        try:
            current = self.kube.get(self.path)
            if current is not None and current.get("spec", {}).get("holderIdentity") == self.identity:
                body = self._body(current, self.clock(), int(current["spec"].get("leaseTransitions") or 0))
                body["spec"]["holderIdentity"] = None
                body["spec"]["leaseDurationSeconds"] = 1
                body["spec"]["renewTime"] = _fmt(self.clock() - timedelta(seconds=self.lease_s))
                self.kube.request("PUT", self.path, body)
        except KubeError as err:
            log.warning("could not release lease %s/%s: %s", self.namespace, self.name, err)

    async def run(self, stop: asyncio.Event) -> None:
        """Acquire and renew until ``stop`` is set, then release."""
        try:
            while not stop.is_set():
                await self.kube.run(self.try_acquire)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.renew_s)
        finally:
            await self.kube.run(self.release)
