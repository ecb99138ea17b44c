"""The operator's probe and metrics listeners (``adapters/health.py``).

The HTTP side is tested with real sockets and a real HTTP client against stand-in probe sources;
what the probes mean (lease held or followed, last cycle ok) is tested with two real operator
processes on the real control plane, each answering on its own loopback address.
"""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from operator_helpers import OperatorProcess, lease_holder, wait_until
from prometheus_client import CollectorRegistry, Gauge

from gpupool_operator.adapters.health import Address, HealthServer, parse_address
from gpupool_operator.local.cluster import LocalCluster


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


async def _aget(url: str) -> tuple[int, str]:
    return await asyncio.to_thread(_get, url)


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Probes:
    def __init__(self, ready: tuple[bool, str], alive: tuple[bool, str] = (True, "loop turned 0.1s ago")) -> None:
        self.ready, self.alive = ready, alive

    def readiness(self) -> tuple[bool, str]:
        return self.ready

    def liveness(self) -> tuple[bool, str]:
        if isinstance(self.alive, Exception):
            raise self.alive
        return self.alive


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8081", Address("127.0.0.1", 8081)),
        ("0.0.0.0:8080", Address("0.0.0.0", 8080)),
        ("[::1]:9000", Address("::1", 9000)),
        ("", None),
        ("0", None),
    ],
)
def test_addresses_parse(text: str, expected: Address | None) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("8080", "expected HOST:PORT"),
        (":8080", "expected HOST:PORT"),
        ("localhost:8080", "'localhost' is not an IP address"),
        ("127.0.0.1:http", "the port must be a number"),
        ("127.0.0.1:70000", "the port must be a number"),
    ],
)
def test_bad_addresses_say_what_is_expected(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="--health-address") as err:
        parse_address(text, "--health-address")
    assert message in str(err.value)


async def test_probes_answer_with_status_and_reason_on_separate_listeners() -> None:
    registry = CollectorRegistry()
    Gauge("gpupool_leader", "leader", registry=registry).set(1)
    probes = Probes((False, "leading, but the last placement cycle failed"))
    server = HealthServer(Address("127.0.0.1", _free_port()), Address("127.0.0.1", _free_port()),
                          lambda: probes, registry=registry)
    await server.start()
    try:
        health, metrics = server.bound["health"], server.bound["metrics"]
        assert health.port != metrics.port
        assert await _aget(f"http://{health}/readyz") == (503, "not ok: leading, but the last placement cycle failed\n")
        assert await _aget(f"http://{health}/healthz") == (200, "ok: loop turned 0.1s ago\n")
        probes.ready = (True, "standby; following op-a")
        assert await _aget(f"http://{health}/readyz") == (200, "ok: standby; following op-a\n")
        probes.alive = (False, "task(s) ended: gpupool-loop")
        assert (await _aget(f"http://{health}/healthz"))[0] == 503
        probes.alive = RuntimeError("boom")  # type: ignore[assignment]
        assert await _aget(f"http://{health}/healthz") == (503, "not ok: liveness check failed: RuntimeError: boom\n")
        status, body = await _aget(f"http://{metrics}/metrics")
        assert status == 200
        assert "gpupool_leader 1.0" in body
        assert (await _aget(f"http://{health}/metrics"))[0] == 404  # each path only where it was put
        assert (await _aget(f"http://{metrics}/readyz"))[0] == 404
    finally:
        await server.close()
    with pytest.raises(OSError):  # noqa: PT011 (closed: nothing listens any more)
        socket.create_connection(("127.0.0.1", health.port), timeout=2).close()


async def test_one_address_for_both_serves_every_path_on_one_listener() -> None:
    address = Address("127.0.0.1", _free_port())
    server = HealthServer(address, address, lambda: Probes((True, "leading")), registry=CollectorRegistry())
    await server.start()
    try:
        assert server.bound["health"] == server.bound["metrics"] == address
        assert (await _aget(f"http://{address}/readyz"))[0] == 200
        assert (await _aget(f"http://{address}/metrics"))[0] == 200
    finally:
        await server.close()


async def test_before_the_runtime_starts_not_ready_and_alive_only_for_the_grace() -> None:
    now = [100.0]
    server = HealthServer(Address("127.0.0.1", _free_port()), None, lambda: None,
                          startup_grace_s=60, clock=lambda: now[0])
    await server.start()
    try:
        url = f"http://{server.bound['health']}"
        assert await _aget(url + "/readyz") == (
            503, "not ok: starting: the operator has not started its placement loop yet\n")
        assert await _aget(url + "/healthz") == (200, "ok: starting (0s)\n")
        now[0] += 61
        assert await _aget(url + "/healthz") == (503, "not ok: the operator has not started within 60s\n")
        assert "metrics" not in server.bound
    finally:
        await server.close()


async def test_an_address_in_use_is_one_error_naming_it() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        health = _free_port()
        server = HealthServer(Address("127.0.0.1", health), Address("127.0.0.1", port), lambda: None)
        with pytest.raises(OSError, match=rf"cannot listen on 127\.0\.0\.1:{port}"):
            await server.start()
    with pytest.raises(OSError):  # noqa: PT011 (the health listener it had opened is closed again)
        socket.create_connection(("127.0.0.1", health), timeout=2).close()


def test_two_operators_are_ready_as_leader_and_standby_and_bind_only_where_told(
    control_plane: LocalCluster, tmp_path: Path
) -> None:
    """Each replica's /readyz is 200 (one leads, the other follows a live holder), /healthz is 200,
    /metrics says which one leads; the listeners bind the loopback address they were given only."""
    kubeconfig = str(control_plane.kubeconfig)
    ports = {name: (_free_port(), _free_port()) for name in ("op-ha", "op-hb")}
    hosts = {"op-ha": "127.0.0.2", "op-hb": "127.0.0.3"}

    def env(name: str) -> dict[str, str]:
        health, metrics = ports[name]
        return {"GPUPOOL_OPERATOR_HEALTH_ADDRESS": f"{hosts[name]}:{health}",
                "GPUPOOL_OPERATOR_METRICS_ADDRESS": f"{hosts[name]}:{metrics}"}

    with OperatorProcess(kubeconfig, tmp_path / "a.log", "op-ha", env("op-ha")) as a, \
            OperatorProcess(kubeconfig, tmp_path / "b.log", "op-hb", env("op-hb")) as b:
        def leading() -> str | None:
            identity = lease_holder(control_plane) or ""
            return next((name for name in hosts if identity.startswith(name + "_")), None)

        holder = wait_until(leading, 90, "one of the two to hold the Lease")
        standby = "op-hb" if holder == "op-ha" else "op-ha"

        def ready(name: str) -> tuple[int, str] | None:
            answer = _get(f"http://{hosts[name]}:{ports[name][0]}/readyz")
            return answer if answer[0] == 200 else None

        leader_answer = wait_until(lambda: ready(holder), 90, f"{holder} ready")
        assert leader_answer[1].startswith("ok: leading;"), leader_answer
        standby_answer = wait_until(lambda: ready(standby), 90, f"{standby} ready")
        assert standby_answer[1].startswith(f"ok: standby; following {holder}_"), standby_answer
        for name, leads in ((holder, "1.0"), (standby, "0.0")):
            health, metrics = ports[name]
            assert _get(f"http://{hosts[name]}:{health}/healthz")[0] == 200
            status, body = _get(f"http://{hosts[name]}:{metrics}/metrics")
            assert status == 200
            assert f"gpupool_leader {leads}" in body
            with pytest.raises(OSError):  # noqa: PT011 (bound to its own address, not every interface)
                socket.create_connection(("127.0.0.1", health), timeout=2).close()
        assert "gpupool operator 0.1.0; health on 127.0.0." in a.log() + b.log()
