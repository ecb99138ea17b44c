"""The operator's moving parts wired together: API access, store, leader election, placement loop, probes.

Configured from the environment (``adapters/settings.py`` lists the variables), so kopf's own
command line (``kopf run -m gpupool_operator.handlers``), ``gpupool operator`` and tests take the
same path. kopf's startup handler creates the :class:`Runtime`; :func:`current` returns it (the
health and metrics server reads its probes there).

Two Kube adapters share one API client: the leader elector's (its Lease writes must go through
whoever leads) and the loop's, whose every write is fenced by :meth:`LeaderElector.may_write`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpupool_operator.adapters import metrics
from gpupool_operator.adapters.autoscale import Autoscaler
from gpupool_operator.adapters.kube import Kube, load_client
from gpupool_operator.adapters.leader import LeaderElector
from gpupool_operator.adapters.loop import PlacementLoop
from gpupool_operator.adapters.settings import OperatorSettings, settings_from_env
from gpupool_operator.adapters.store import Kind, Store

__all__ = ["Runtime", "current", "resource_of", "settings_from_env"]

log = logging.getLogger("gpupool.operator")
_running: dict[str, Runtime] = {}  # "current" -> the started Runtime


def current() -> Runtime | None:
    """The running operator's :class:`Runtime` (set when kopf's startup creates it), else ``None``."""
    return _running.get("current")


def resource_of(path: str) -> str:
    """The resource a REST path addresses (``pods``, ``nodes``, ``inferencepools/status``)."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    if not rest:
        return "namespaces" if parts[2:3] == ["namespaces"] else "unknown"
    return rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")


def _count(method: str, path: str) -> None:
    metrics.API_REQUESTS.labels(verb=method, resource=resource_of(path)).inc()


@dataclass
class Runtime:
    """Everything one operator process runs besides kopf's watchers."""

    kube: Kube
    store: Store
    loop: PlacementLoop
    leader: LeaderElector
    settings: OperatorSettings = field(default_factory=OperatorSettings)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Runtime:
        env = os.environ if env is None else env
        kubeconfig = env.get("KUBECONFIG")
        client = load_client(Path(kubeconfig) if kubeconfig else None)
        settings = settings_from_env(env)
        lease_s = float(env.get("GPUPOOL_LEASE_SECONDS", "15"))
        elector_kube = Kube(client, workers=2)
        elector_kube.observe(_count)
        leader = LeaderElector(elector_kube, settings.namespace, name=env.get("GPUPOOL_LEASE_NAME", "gpupool-operator"),
                               lease_s=lease_s, retry_s=max(0.5, lease_s / 5))
        kube = Kube(client, fence=leader.may_write)
        kube.observe(_count)
        store = Store()
        return cls(kube, store, PlacementLoop(kube, store, settings), leader, settings)

    def start(self) -> None:
        _running["current"] = self
        metrics.LEADER.set(0)
        self.tasks.append(asyncio.create_task(self.leader.run(self.stop, self._leadership), name="gpupool-leader"))
        self.tasks.append(asyncio.create_task(self.loop.run(self.stop, lambda: self.leader.is_leader),
                                              name="gpupool-loop"))
        self.tasks.append(asyncio.create_task(self.loop.stats.run(self.stop, lambda: self.leader.is_leader),
                                              name="gpupool-workerstats"))
        # -- live autoscaling (adapters/autoscale.py, issue 12): its own task, acting only while leading
        if (scaler := Autoscaler.attach(self.loop)) is not None:
            self.tasks.append(asyncio.create_task(scaler.run(self.stop, lambda: self.leader.is_leader),
                                                  name="gpupool-autoscaler"))

    def _leadership(self, leading: bool) -> None:
        metrics.LEADER.set(1 if leading else 0)
        self.loop.poke()

    async def shutdown(self) -> None:
        self.stop.set()
        self.loop.poke()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, timeout=10)
        self.kube.close()
        self.leader.kube.close()
        if _running.get("current") is self:
            del _running["current"]

    # -- probes ---------------------------------------------------------------------------------
    def readiness(self) -> tuple[bool, str]:
        """Ready when leading and the last cycle succeeded, or when following a holder seen
        renewing the Lease within its duration."""
        if self.leader.is_leader:
            if self.loop.last_ok:
                return True, f"leading; {self.loop.cycles} cycle(s), the last one succeeded"
            return False, "leading, but the last placement cycle failed (or none has finished yet)"
        if self.leader.follows_live_leader():
            return True, f"standby; following {self.leader.holder}"
        return False, "no leader seen renewing the Lease within its duration"

    def liveness(self) -> tuple[bool, str]:
        """Alive while the leader and loop tasks run and the loop has turned recently."""
        dead = [t.get_name() for t in self.tasks if t.done()]
        if dead and not self.stop.is_set():
            return False, f"task(s) ended: {', '.join(dead)}"
        quiet = time.monotonic() - self.loop.beat
        limit = 2 * self.settings.resync_s + 120
        if quiet > limit:
            return False, f"the placement loop has not turned for {quiet:.0f}s (limit {limit:.0f}s)"
        return True, f"loop turned {quiet:.1f}s ago"

    # -- watch events ---------------------------------------------------------------------------
    def observe(self, kind: Kind, event: Mapping[str, Any]) -> None:
        """One watch event from kopf: into the store, and a poke when it matters."""
        obj = event.get("object")
        if isinstance(obj, Mapping) and self.loop.observer.feed(kind, event.get("type"), obj):
            self.loop.poke()
