"""The operator's moving parts wired together: API access, store, leader election, placement loop.

Configured from the environment (the Deployment and ``gpupool operator`` set these), so kopf's
own command line (``kopf run -m gpupool_operator.handlers``) and tests use the same path:

| variable | meaning | default |
|---|---|---|
| KUBECONFIG | kubeconfig to use; in-cluster ServiceAccount when unset | |
| GPUPOOL_NAMESPACE | namespace of the Lease and the MIG manager ConfigMap | gpupool-system |
| GPUPOOL_WORKER_IMAGE | image of the replica pods | ghcr.io/gpupool/worker:0.1.0 |
| GPUPOOL_WORKER_SERVICE_ACCOUNT | ServiceAccount of the replica pods | (namespace default) |
| GPUPOOL_MIG_CONFIGMAP | the MIG manager's mig-parted ConfigMap | gpupool-mig-parted-config |
| GPUPOOL_LEASE_NAME / GPUPOOL_LEASE_SECONDS | leader-election Lease | gpupool-operator / 15 |
| GPUPOOL_RESYNC_SECONDS | full re-plan period without events | 30 |
| GPUPOOL_MIG_FAILURE_COOLDOWN_SECONDS | how long failed re-layouts and refused capacity stay out of plans | 600 |
| GPUPOOL_UNSCHEDULABLE_SECONDS | how long kube-scheduler may refuse a replica before it is re-planned | 60 |
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpupool_operator.adapters.kube import Kube, load_client
from gpupool_operator.adapters.leader import LeaderElector
from gpupool_operator.adapters.metrics import API_REQUESTS
from gpupool_operator.adapters.reconciler import OperatorSettings, Reconciler
from gpupool_operator.adapters.store import Kind, Store
from gpupool_operator.adapters.workloads import WorkerSettings

__all__ = ["Runtime", "settings_from_env"]

log = logging.getLogger("gpupool.operator")


def settings_from_env(env: Mapping[str, str] | None = None) -> OperatorSettings:
    env = os.environ if env is None else env
    return OperatorSettings(
        namespace=env.get("GPUPOOL_NAMESPACE", "gpupool-system"),
        worker=WorkerSettings(
            image=env.get("GPUPOOL_WORKER_IMAGE", WorkerSettings().image),
            service_account=env.get("GPUPOOL_WORKER_SERVICE_ACCOUNT") or None,
        ),
        mig_config_map=env.get("GPUPOOL_MIG_CONFIGMAP", "gpupool-mig-parted-config"),
        resync_s=float(env.get("GPUPOOL_RESYNC_SECONDS", "30")),
        failed_cooldown_s=float(env.get("GPUPOOL_MIG_FAILURE_COOLDOWN_SECONDS", "600")),
        unschedulable_grace_s=float(env.get("GPUPOOL_UNSCHEDULABLE_SECONDS", "60")),
    )


@dataclass
class Runtime:
    """Everything one operator process runs besides kopf's watchers."""

    kube: Kube
    store: Store
    reconciler: Reconciler
    leader: LeaderElector
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Runtime:
        env = os.environ if env is None else env
        kubeconfig = env.get("KUBECONFIG")
        kube = Kube(load_client(Path(kubeconfig) if kubeconfig else None))
        kube.observe(lambda method, _path: API_REQUESTS.labels(verb=method).inc())
        settings = settings_from_env(env)
        store = Store()
        leader = LeaderElector(
            kube,
            settings.namespace,
            name=env.get("GPUPOOL_LEASE_NAME", "gpupool-operator"),
            lease_s=int(env.get("GPUPOOL_LEASE_SECONDS", "15")),
            renew_s=max(0.5, int(env.get("GPUPOOL_LEASE_SECONDS", "15")) / 5),
        )
        return cls(kube, store, Reconciler(kube, store, settings), leader)

    def start(self) -> None:
        self.tasks.append(asyncio.create_task(self.leader.run(self.stop), name="gpupool-leader"))
        self.tasks.append(asyncio.create_task(self._follow_leadership(), name="gpupool-leadership"))
        self.tasks.append(
            asyncio.create_task(self.reconciler.run(self.stop, lambda: self.leader.is_leader), name="gpupool-loop")
        )

    async def _follow_leadership(self) -> None:
        while not self.stop.is_set():
            await self.leader.changed.wait()
            self.leader.changed.clear()
            self.reconciler.poke()

    async def shutdown(self) -> None:
        self.stop.set()
        self.reconciler.poke()
        self.leader.changed.set()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, timeout=10)
        self.kube.close()

    def observe(self, kind: Kind, event: Mapping[str, Any]) -> None:
        """One watch event from kopf: update the store and poke the loop when it matters."""
        obj = event.get("object")
        if not isinstance(obj, Mapping):
            return
        if self.store.apply_event(kind, event.get("type"), obj):
            self.reconciler.poke()

    def observe_service(self, event: Mapping[str, Any]) -> None:
        """A watch event for a Service the operator manages: only deletions matter."""
        obj = event.get("object")
        if event.get("type") == "DELETED" and isinstance(obj, Mapping):
            self.reconciler.service_gone(obj)
