"""Bounded waits and small kubectl helpers for the operator's real-cluster tests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

from gpupool_operator.local.cluster import LocalCluster

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.25) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last value: {last!r}")


def get_json(cluster: LocalCluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def apply(cluster: LocalCluster, obj: dict[str, Any], namespace: str | None = None) -> None:
    args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
    cluster.kubectl(*args, input=yaml.safe_dump(obj))


def pods(cluster: LocalCluster, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(cluster, "pods", "-n", namespace)["items"]
    return items


def live_pods(cluster: LocalCluster, namespace: str) -> list[dict[str, Any]]:
    return [p for p in pods(cluster, namespace) if not p["metadata"].get("deletionTimestamp")]


def running(pod: dict[str, Any]) -> bool:
    return pod.get("status", {}).get("phase") == "Running" and bool(pod["spec"].get("nodeName"))


def pool(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = get_json(cluster, "inferencepool", name, "-n", namespace)
    return obj


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions", []):
        if cond["type"] == type_:
            return dict(cond)
    return None


def settled(cluster: LocalCluster, namespace: str, name: str, replicas: int) -> bool:
    """The pool's status says every desired replica is ready and the pods agree."""
    obj = pool(cluster, namespace, name)
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"]["generation"]:
        return False
    ready = condition(obj, "Ready")
    live = [p for p in live_pods(cluster, namespace)
            if p["metadata"].get("labels", {}).get("gpupool.io/inferencepool") == name]
    return (
        status.get("desiredReplicas") == replicas
        and status.get("readyReplicas") == replicas
        and ready is not None and ready["status"] == "True"
        and len(live) == replicas
        and all(running(p) for p in live)
    )


class OperatorProcess:
    """``gpupool operator`` as a separate process (for kill/restart, two replicas, and RBAC tests)."""

    def __init__(self, kubeconfig: str, log: Any, name: str, extra_env: dict[str, str] | None = None,
                 extra_args: list[str] | None = None) -> None:
        import os
        import subprocess
        import sys

        root = __import__("pathlib").Path(__file__).resolve().parents[2]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(str(root / p) for p in ("operator", "worker", "proto")),
            "POD_NAME": name,
            "GPUPOOL_RESYNC_SECONDS": "10",
            "NO_PROXY": "127.0.0.1,localhost",
            **(extra_env or {}),
        }
        env.pop("KUBECONFIG", None)
        self.name = name
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gpupool_operator", "operator", "--kubeconfig", kubeconfig,
             "--namespace", "gpupool-system", "--lease-seconds", "4", *(extra_args or [])],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def log(self) -> str:
        return str(__import__("pathlib").Path(self.log_path).read_text(errors="replace"))

    def signal(self, sig: int) -> None:
        """Send ``sig`` and return at once (SIGSTOP freezes the process, SIGCONT resumes it)."""
        import os

        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self, sig: int) -> None:
        import os
        import signal
        import subprocess

        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a frozen process handles no other signal
            os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()

    def __enter__(self) -> OperatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        self.kill(signal.SIGTERM)


def lease_holder(cluster: LocalCluster) -> str | None:
    out = cluster.kubectl("get", "lease", "gpupool-operator", "-n", "gpupool-system",
                          "-o", "jsonpath={.spec.holderIdentity}", check=False)
    return out.stdout.strip() or None if out.returncode == 0 else None


def replica_indices(cluster: LocalCluster, namespace: str, pool_name: str) -> list[int]:
    return sorted(
        int(p["metadata"]["labels"]["gpupool.io/replica"]) for p in live_pods(cluster, namespace)
        if p["metadata"]["labels"].get("gpupool.io/inferencepool") == pool_name
    )


class PodVersions:
    """Every version of every pod in a namespace, as a watch delivers them (a thread; bounded).

    Polling can miss a state that lasts a second on a loaded machine; a watch cannot.
    """

    def __init__(self, cluster: LocalCluster, namespace: str) -> None:
        import threading

        self.cluster = cluster
        self.namespace = namespace
        self.versions: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-versions", daemon=True)

    def _run(self) -> None:
        from kubernetes import client, watch

        core = client.CoreV1Api(self.cluster.api_client())
        while not self._stop.is_set():
            stream = watch.Watch()
            for event in stream.stream(core.list_namespaced_pod, self.namespace, timeout_seconds=2,
                                       _request_timeout=10):
                self.versions.append(client.ApiClient().sanitize_for_serialization(event["object"]))
                if self._stop.is_set():
                    stream.stop()

    def __enter__(self) -> PodVersions:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One process's Prometheus metrics: (sample name, sorted labels) -> value."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
