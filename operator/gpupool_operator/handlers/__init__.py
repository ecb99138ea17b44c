"""kopf wiring, kept thin: watch events go to the observe stage and poke the one placement loop.

Only ``@kopf.on.event`` handlers, async (they only touch memory: no thread hop per event); the loop
(``adapters/loop.py``) calls the stages: observe, decide, act, report. kopf persists no handler
state, adds no finalizers and posts no Events of its own, so an operator that is down never
blocks a deletion (owner references clean up), and a standby replica can watch (warm cache)
without writing anything. Leadership is a Lease (``adapters.leader``); kopf runs
``--standalone``. Run with ``gpupool operator`` or ``kopf run -A --standalone -m
gpupool_operator.handlers``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import kopf

from gpupool_operator.adapters.kube import connection_settings, load_client
from gpupool_operator.adapters.names import LABEL_MANAGED_BY, MANAGED_BY
from gpupool_operator.adapters.runtime import Runtime
from gpupool_operator.adapters.store import Kind
from gpupool_operator.api import GROUP, VERSION

__all__ = ["configure", "shutdown"]


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.scanning.disabled = True  # no CRD/namespace scanning: no RBAC for it
    settings.posting.enabled = False  # a standby must write nothing, kopf's own Events included
    settings.posting.level = logging.WARNING
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # not one line per watch event
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    runtime = Runtime.from_env()
    memo["runtime"] = runtime
    runtime.start()


@kopf.on.login()
def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """Log kopf in with the operator's own credentials (``$KUBECONFIG`` read now, or in-cluster)."""
    runtime = memo.get("runtime")
    client = runtime.kube.api_client if isinstance(runtime, Runtime) else load_client(_kubeconfig())
    return kopf.ConnectionInfo(**connection_settings(client))


def _kubeconfig() -> Path | None:
    raw = os.environ.get("KUBECONFIG")
    return Path(raw) if raw else None


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    runtime = memo.get("runtime")
    if isinstance(runtime, Runtime):
        await runtime.shutdown()


def _feed(kind: Kind, event: kopf.RawEvent, memo: kopf.Memo) -> None:
    runtime = memo.get("runtime")
    if isinstance(runtime, Runtime):
        runtime.observe(kind, event)


@kopf.on.event("v1", "nodes")
async def node_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _feed(Kind.NODE, event, memo)


@kopf.on.event("v1", "pods")
async def pod_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _feed(Kind.POD, event, memo)


@kopf.on.event(GROUP, VERSION, "inferencepools")
async def pool_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _feed(Kind.POOL, event, memo)


@kopf.on.event(GROUP, VERSION, "gpupoolconfigs")
async def config_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _feed(Kind.CONFIG, event, memo)


@kopf.on.event("v1", "services", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def service_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """A deleted or hand-edited Service is made again or repaired."""
    _feed(Kind.SERVICE, event, memo)
