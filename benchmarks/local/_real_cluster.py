"""What the real-node benchmarks share: a bounded wait, and ``gpupool operator`` as a process on a
local cluster with real nodes (started with the nodes' worker image, stopped after its pools)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_NS = "gpupool-system"


def until(what: str, ok: Callable[[], Any], timeout_s: float = 300) -> float:
    """Seconds until ``ok()`` is truthy (polled every 0.1 s); RuntimeError after ``timeout_s``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if ok():
            return time.monotonic() - t0
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not within {timeout_s:.0f}s")


def start_operator(cluster: Any, worker_image: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``gpupool operator`` for ``cluster`` in its own session, logging to the cluster's logs."""
    with open(cluster.logs / "operator.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "gpupool_operator", "operator", f"--kubeconfig={cluster.kubeconfig}",
             f"--namespace={OPERATOR_NS}", f"--worker-image={worker_image}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONPATH": "operator:worker:proto", "NO_PROXY": "127.0.0.1,localhost",
                 **(env or {})}, cwd=ROOT)


def stop_operator(cluster: Any, operator: subprocess.Popen[bytes], namespace: str) -> None:
    """Delete the pools in ``namespace`` (their replicas go with them), then stop the operator."""
    cluster.kubectl("delete", "inferencepools", "--all", "-n", namespace, "--wait=true", "--timeout=60s", check=False)
    operator.terminate()
    try:
        operator.wait(20)
    except subprocess.TimeoutExpired:
        operator.kill()
        operator.wait(5)
