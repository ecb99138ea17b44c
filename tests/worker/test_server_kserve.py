"""The kserve SDK's InferenceGRPCClient (KServe's own Python client) against the worker.

The client runs in the kserve virtualenv in a subprocess (kserve 0.21 pins protobuf<7, and its
`inference.*` messages clash with tritonclient's in one process); this test compares what it got
with what tritonclient gets from the same worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton

from .conftest import WorkerProcess

# scripts/setup.sh puts the kserve venv beside the project venv ("<venv>-kserve"). The Makefile
# names it in GPUPOOL_KSERVE_PYTHON: then a missing venv is a failure, never a silent skip; only an
# ad-hoc run outside the Makefile without it skips.
_CONFIGURED = os.environ.get("GPUPOOL_KSERVE_PYTHON")
KSERVE_PYTHON = Path(_CONFIGURED or f"{sys.prefix}-kserve/bin/python")

pytestmark = pytest.mark.skipif(
    not _CONFIGURED and not KSERVE_PYTHON.exists(),
    reason=f"no kserve virtualenv at {KSERVE_PYTHON}: run bash scripts/kserve_env.sh <venv>")


@pytest.fixture(scope="module")
def kserve_result(worker: WorkerProcess) -> dict[str, object]:
    script = Path(__file__).with_name("kserve_client.py")
    done = subprocess.run([str(KSERVE_PYTHON), str(script), worker.url], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": ""}, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_kserve_client_sees_a_live_ready_server(kserve_result: dict[str, object]) -> None:
    assert kserve_result["server_live"] is True
    assert kserve_result["server_ready"] is True
    assert kserve_result["model_ready"] is True


def test_kserve_client_gets_the_same_embeddings_as_tritonclient(
    kserve_result: dict[str, object], worker: WorkerProcess,
) -> None:
    minilm = kserve_result["minilm"]
    assert isinstance(minilm, dict)
    assert minilm["id"] == "k-1"
    assert minilm["name"] == "embedding"
    assert minilm["shape"] == [2, 384]
    assert int(minilm["parameters"]["cost_picousd"].split(":")[1]) > 0
    texts = ["The cat sits on the mat.", "GPU slices cut the cost of inference."]
    inp = triton.InferInput("text", [2], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
    with triton.InferenceServerClient(worker.url) as client:
        reference = client.infer("minilm", [inp]).as_numpy("embedding")
    np.testing.assert_allclose(np.array(minilm["embedding"], dtype=np.float32), reference, atol=1e-5)


def test_kserve_client_numeric_model_and_concurrency(kserve_result: dict[str, object]) -> None:
    add_sub = kserve_result["add_sub"]
    assert isinstance(add_sub, dict)
    a = np.arange(32, dtype=np.float32).reshape(2, 16)
    np.testing.assert_array_equal(np.array(add_sub["OUTPUT0"]), a + 1)
    np.testing.assert_array_equal(np.array(add_sub["OUTPUT1"]), a - 1)
    assert kserve_result["concurrent"] == [1] * 16


def test_kserve_client_sees_not_found_for_unknown_models(kserve_result: dict[str, object]) -> None:
    code, details = kserve_result["unknown_model"]  # type: ignore[misc]
    assert code == "StatusCode.NOT_FOUND"
    assert "unknown model 'nope'" in details
