"""Worker test fixtures.

Real servers, real clients: ``worker`` starts ``python -m gpupool_worker serve`` as a subprocess on a
free port (the same entry point the container runs) and tests talk to it with tritonclient. The
worker never shares a process with tritonclient: both register protobuf messages named
``inference.*`` in the default descriptor pool, which refuses duplicates (triton-inference-server/
client#730), exactly as two real processes would not care.

TRITON_INTERPRET=1 is set before anything imports triton, so the kernel tests run on the CPU.
"""

from __future__ import annotations

import os

# GPUPOOL_TEST_CUDA=1 runs the kernel tests on a real GPU instead of the interpreter.
if os.environ.get("GPUPOOL_TEST_CUDA") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gpupool_worker.engine.models.examples import (
    write_add_sub,
    write_minilm,
    write_mlp,
    write_tiny_encoder,
)

ROOT = Path(__file__).resolve().parents[2]
PYTHONPATH = os.pathsep.join(str(ROOT / p) for p in ("operator", "worker", "proto"))


@pytest.fixture(scope="session")
def example_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_encoder, add_sub (TorchScript), mlp (torch.export) and minilm, written once."""
    root = tmp_path_factory.mktemp("models")
    write_tiny_encoder(root / "tiny_encoder", max_batch_size=16, max_queue_delay_us=2_000)
    write_add_sub(root / "add_sub", max_batch_size=8, max_queue_delay_us=1_000)
    write_mlp(root / "mlp")
    write_minilm(root / "minilm", max_batch_size=64, max_queue_delay_us=2_000)
    return root


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[str]
    port: int
    metrics_port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"localhost:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_worker(
    repository: Path | None, log_dir: Path, *, env: dict[str, str] | None = None,
    args: tuple[str, ...] = (), wait_ready: bool = True,
) -> WorkerProcess:
    metrics_port = _free_port()
    full_env = {**os.environ, "PYTHONPATH": PYTHONPATH, "GPUPOOL_TORCH_THREADS": "1",
                "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("TRITON_INTERPRET", None)  # the server serves on CPU without Triton
    log_path = log_dir / f"worker-{metrics_port}.log"
    cmd = [sys.executable, "-m", "gpupool_worker", "serve", "--host", "127.0.0.1", "--port", "0",
           "--metrics-port", str(metrics_port), *args]
    if repository is not None:
        cmd += ["--model-repository", str(repository)]
    log_file = log_path.open("w")
    proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=log_file, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on port" not in line:
        proc.wait(30)
        raise RuntimeError(f"worker did not start: {line!r}\n{log_path.read_text()}")
    worker = WorkerProcess(proc, int(line.rsplit(" ", 1)[1]), metrics_port, log_path, full_env)
    if wait_ready:
        wait_until_ready(worker)
    return worker


def wait_until_ready(worker: WorkerProcess, timeout: float = 180) -> None:
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(worker.url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if worker.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {worker.proc.returncode}:\n{worker.log()}")
            try:
                index = client.get_model_repository_index(as_json=True).get("models", [])
                if index and all(m.get("state") != "LOADING" for m in index):
                    return
            except Exception:
                pass
            time.sleep(0.2)
    finally:
        client.close()
    raise TimeoutError(f"worker not ready after {timeout}s:\n{worker.log()}")


@pytest.fixture(scope="session")
def worker_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []
    log_dir = tmp_path_factory.mktemp("worker-logs")

    def factory(repository: Path | None, **kwargs: object) -> WorkerProcess:
        w = start_worker(repository, log_dir, **kwargs)  # type: ignore[arg-type]
        started.append(w)
        return w

    yield factory
    # SIGTERM to every worker first, then wait: each drains and stops on its own clock (5 s of
    # drain by default, up to its stop grace for in-flight work), so waiting for them one after
    # another summed those periods at the end of the session (124 s in CI's last test teardown)
    for w in started:
        if w.proc.poll() is None:
            w.proc.send_signal(signal.SIGTERM)
    for w in started:
        w.terminate()


PRICE_ENV = {
    "GPUPOOL_PRICE_PER_HOUR": "6.88",
    "GPUPOOL_DEVICE_SHARE": "0.375",
    "GPUPOOL_ACCELERATOR": "NVIDIA-H100-80GB-HBM3",
    "GPUPOOL_MIG_PROFILE": "3g.40gb",
}


@pytest.fixture(scope="session")
def worker(worker_factory: Callable[..., WorkerProcess], example_repository: Path) -> WorkerProcess:
    """One worker serving the example repository, priced as a 3g.40gb slice of an H100."""
    return worker_factory(example_repository, env=PRICE_ENV)
