"""The operator's HTTP endpoints: ``/healthz`` (liveness), ``/readyz`` (readiness) and ``/metrics``.

They listen where the Deployment says (``--health-address``, ``--metrics-address``: ``HOST:PORT``), on
one shared listener when both name the same address. They run on the operator's own event loop, so
a loop that is blocked stops answering ``/healthz`` and the kubelet restarts the container.

What the probes mean comes from the running :class:`~gpupool_operator.adapters.runtime.Runtime`
(``readiness()``, ``liveness()``): ready when this replica holds the leader Lease and its last
placement cycle succeeded, or follows a holder seen renewing the Lease; alive while its tasks run
and the loop turns. Before kopf's startup has created the Runtime, ``/readyz`` says "starting"
(503) and ``/healthz`` says alive for ``startup_grace_s``, then not.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

__all__ = ["Address", "HealthServer", "Probes", "parse_address"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Probes(Protocol):
    def readiness(self) -> tuple[bool, str]: ...

    def liveness(self) -> tuple[bool, str]: ...


@dataclass(frozen=True)
class Address:
    """Where one listener binds: ``host`` is an IP address (``0.0.0.0`` and ``::`` mean every interface)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str, flag: str = "address") -> Address | None:
    """``HOST:PORT`` (``127.0.0.1:8081``, ``0.0.0.0:8080``, ``[::]:8080``) -> :class:`Address`;
    ``""`` or ``"0"`` -> ``None`` (off). A bare port or a missing host is refused: the listener binds
    exactly where it is told, never on every interface by default."""
    text = text.strip()
    if text in ("", "0"):
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{flag} {text!r}: expected HOST:PORT, such as 127.0.0.1:8081 or 0.0.0.0:8080")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{flag} {text!r}: {host!r} is not an IP address (0.0.0.0 means every interface)") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{flag} {text!r}: the port must be a number from 1 to 65535")
    return Address(host, int(port))


class HealthServer:
    """Serves the probes and metrics until :meth:`close`. ``probes()`` returns the Runtime, or
    ``None`` while the operator is still starting."""

    def __init__(
        self,
        health: Address | None,
        metrics: Address | None,
        probes: Callable[[], Probes | None],
        *,
        startup_grace_s: float = 120.0,
        registry: CollectorRegistry = REGISTRY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.health, self.metrics = health, metrics
        self._probes, self._grace_s, self._registry, self._clock = probes, startup_grace_s, registry, clock
        self._started = clock()
        self._runners: list[web.AppRunner] = []
        self.bound: dict[str, Address] = {}  # "health" / "metrics" -> the address really bound (port 0 resolved)

    async def start(self) -> None:
        routes: dict[Address, list[tuple[str, Handler]]] = {}
        if self.health is not None:
            routes.setdefault(self.health, []).extend([("/healthz", self._healthz), ("/readyz", self._readyz)])
        if self.metrics is not None:
            routes.setdefault(self.metrics, []).append(("/metrics", self._metrics))
        for address, paths in routes.items():
            app = web.Application()
            for path, handler in paths:
                app.router.add_get(path, handler)
            try:
                family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
                sock = socket.create_server((address.host, address.port), family=family)
            except OSError as err:
                await self.close()
                raise OSError(err.errno, f"cannot listen on {address}: {err.strerror}") from err
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            await web.SockSite(runner, sock).start()
            self._runners.append(runner)
            bound = Address(address.host, sock.getsockname()[1])
            for path, _ in paths:
                self.bound["metrics" if path == "/metrics" else "health"] = bound

    async def close(self) -> None:
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()

    def check(self, probe: str) -> tuple[bool, str]:
        """One probe's answer, as the endpoint gives it: ``probe`` is ``"readiness"`` or ``"liveness"``."""
        runtime = self._probes()
        if runtime is None:
            if probe == "readiness":
                return False, "starting: the operator has not started its placement loop yet"
            waited = self._clock() - self._started
            if waited <= self._grace_s:
                return True, f"starting ({waited:.0f}s)"
            return False, f"the operator has not started within {self._grace_s:.0f}s"
        try:
            return runtime.readiness() if probe == "readiness" else runtime.liveness()
        except Exception as err:  # a probe that raises must answer, not hang up
            return False, f"{probe} check failed: {type(err).__name__}: {err}"

    async def _healthz(self, _: web.Request) -> web.Response:
        return self._answer(*self.check("liveness"))

    async def _readyz(self, _: web.Request) -> web.Response:
        return self._answer(*self.check("readiness"))

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    @staticmethod
    def _answer(ok: bool, reason: str) -> web.Response:
        return web.Response(status=200 if ok else 503, text=("ok: " if ok else "not ok: ") + reason + "\n")
