"""Every pool in examples/ is servable as written (issue: "every file in examples/ servable").

Each example pool is applied to the real control plane with the operator running; the Secrets it
references are created as a platform team would. For each model, the replica pod the operator
created (or, for a model at minReplicas 0, the pod the same function builds for it) is run the
way the kubelet would run it here: its worker container's environment, its Secret's keys written
as files at a local mount path, then ``python -m gpupool_worker serve`` and a real tritonclient
request. Where the real model is too large for this machine, a tiny model of the same family and
format is published at the same name on the tests' real servers (olah behind HF_ENDPOINT, moto
S3 behind the Secret's AWS_ENDPOINT_URL, go-containerregistry at the registry host), so the same
code path runs. Changed for this machine, and only this: device cpu with the CPU replica's fp32
eager engine (there is no GPU), the OCI registry's host name, and local paths for the mounts.

The LLM example runs vLLM, which cannot run here: its pod's fetch init container runs for real
(``gpupool-worker fetch`` with the pod's environment) against a tiny Llama at the example's name,
and the vLLM container's arguments are checked in test_runtime_pods.py.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from operator_helpers import apply, get_json, live_pods, wait_until
from support import tiny_models
from support.hub_mirror import HubMirror, hub_mirror
from support.oci_registry import Registry, oci_registry
from support.s3_server import S3Server, s3_server
from worker.conftest import WorkerProcess, start_worker

from gpupool_operator.adapters.demands import parse_pool
from gpupool_operator.adapters.workloads import WorkerSettings, replica_pod
from gpupool_operator.core.demand import Shape, ShapeKind
from gpupool_operator.core.plan import Assignment
from gpupool_operator.local.cluster import LocalCluster

ROOT = Path(__file__).resolve().parents[2]
PYTHONPATH = os.pathsep.join(str(ROOT / p) for p in ("operator", "worker", "proto"))
EXAMPLES = sorted((ROOT / "examples" / "pools").glob("*.yaml"))


def pools_in(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "InferencePool"]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("examples")


@pytest.fixture(scope="module")
def servers(work: Path) -> Iterator[tuple[S3Server, Registry, HubMirror]]:
    (work / "hub").mkdir()
    with s3_server(work) as s3, oci_registry(work) as registry, hub_mirror(work / "hub") as hub:
        yield s3, registry, hub


@pytest.fixture(scope="module")
def worker_factory(work: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Workers as tests/worker starts them (``python -m gpupool_worker serve``), stopped at the end."""
    started: list[WorkerProcess] = []
    (work / "logs").mkdir()

    def factory(repository: Path | None, **kwargs: Any) -> WorkerProcess:
        w = start_worker(repository, work / "logs", **kwargs)
        started.append(w)
        return w

    yield factory
    for w in started:
        w.terminate()


def publish_tiny_models(work: Path, s3: S3Server, registry: Registry, hub: HubMirror) -> None:
    """Tiny models of each example's family and format, at each example's own name."""
    src = work / "src"
    hub.publish("BAAI/bge-reranker-base", tiny_models.write_xlmr_cross_encoder(src / "bge-reranker-base"))
    hub.publish("BAAI/bge-small-en-v1.5", tiny_models.write_sentence_bert(src / "bge-small", pooling="cls"))
    hub.publish("meta-llama/Llama-3.1-70B-Instruct", tiny_models.write_tiny_llama(src / "llama"))
    resnet = tiny_models.write_onnx_classifier(src / "resnet50")
    client = s3.client()
    client.create_bucket(Bucket="ml-models")
    for f in resnet.iterdir():
        client.put_object(Bucket="ml-models", Key=f"vision/resnet50-v1.5/{f.name}", Body=f.read_bytes())
    yolo = tiny_models.write_yolo_torchscript(src / "yolo")
    registry.push("vision/yolov8m", "1.2.0", [Path("model.pt")], cwd=yolo)


def secret_files(cluster: LocalCluster, namespace: str, name: str, into: Path) -> Path:
    """A Secret's keys as the kubelet writes a Secret volume: one file per key."""
    data = get_json(cluster, "secret", name, "-n", namespace)["data"]
    into.mkdir(parents=True, exist_ok=True)
    for key, value in data.items():
        (into / key).write_bytes(base64.b64decode(value))
    return into


def local_env(container: dict[str, Any], pod: dict[str, Any], cluster: LocalCluster, namespace: str, work: Path,
              registry: Registry, hub: HubMirror) -> dict[str, str]:
    env = {e["name"]: e.get("value", "") for e in container["env"]}
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["spec"].get("volumes", []) if "secret" in v}
    name = pod["metadata"]["name"]
    if "source-credentials" in secrets:
        env["GPUPOOL_SOURCE_CREDENTIALS"] = str(secret_files(cluster, namespace, secrets["source-credentials"],
                                                             work / "mounts" / name / "credentials"))
    if "GPUPOOL_MODEL_CACHE" in env:
        env["GPUPOOL_MODEL_CACHE"] = str(work / "node-cache")
    env["GPUPOOL_MODEL_URI"] = env["GPUPOOL_MODEL_URI"].replace("oci://registry.example.com/", f"oci://{registry.host}/")
    env.update(HF_ENDPOINT=hub.endpoint, HF_HUB_OFFLINE="0", GPUPOOL_DEVICE="cpu", GPUPOOL_PRECISION="fp32",
               GPUPOOL_ENGINE="eager", GPUPOOL_TORCH_THREADS="1")
    return env


def replica_pods(cluster: LocalCluster, namespace: str, pool: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """model -> its replica pod: the operator's, or for a model at minReplicas 0 the one the same
    function (workloads.replica_pod) builds for a replica placed on its first hardware option."""
    name = pool["metadata"]["name"]
    wanted = {m["name"] for m in pool["spec"]["models"] if m.get("minReplicas", 1) > 0}

    def created() -> dict[str, dict[str, Any]]:
        found = {p["metadata"]["labels"]["gpupool.io/model"]: p for p in live_pods(cluster, namespace)
                 if p["metadata"].get("labels", {}).get("gpupool.io/inferencepool") == name}
        return found if wanted <= set(found) else {}

    pods = wait_until(created, 120, f"a replica pod for each model of {name}")
    stored = get_json(cluster, "inferencepool", name, "-n", namespace)
    parsed = parse_pool(stored).pool
    assert parsed is not None
    for model in parsed.spec.models:
        if model.name in pods:
            continue
        option = model.hardware[0]
        assert option.mig is not None
        assert option.mig.profile is not None
        shape = Shape(ShapeKind.MIG, "A100-80GB", profile=option.mig.profile)
        a = Assignment(demand=f"{namespace}/{name}/{model.name}", replica=0, shape=shape, node="a100-0",
                       gpus=(0,), start=0, cost=1.0)
        pods[model.name] = replica_pod(parsed, stored["metadata"]["uid"], model, a, 0, "NVIDIA-A100-SXM4-80GB",
                                       3.43, gated=False, settings=WorkerSettings())
    return pods


def request_for(task: str, model: str) -> tuple[list[Any], Callable[[Any], None]]:
    import tritonclient.grpc as triton

    def text(name: str, items: list[str]) -> Any:
        t = triton.InferInput(name, [len(items)], "BYTES")
        t.set_data_from_numpy(np.array([s.encode() for s in items], dtype=object))
        return t

    if task == "Reranking":
        def check(r: Any) -> None:
            assert r.as_numpy("score").shape == (2,)
        return [text("query", ["cheap inference"] * 2), text("document", ["gpu slices", "a lazy dog"])], check
    if task == "ImageClassification":
        image = triton.InferInput("image", [1, 300, 400, 3], "UINT8")
        image.set_data_from_numpy(np.random.default_rng(0).integers(0, 256, (1, 300, 400, 3), dtype=np.uint8))

        def check_image(r: Any) -> None:
            assert r.as_numpy("label")[0].decode().startswith("class_")
        return [image], check_image
    if task == "Tensors":
        images = triton.InferInput("images", [1, 3, 640, 640], "FP32")
        images.set_data_from_numpy(np.zeros((1, 3, 640, 640), dtype=np.float32))

        def check_tensors(r: Any) -> None:
            assert r.as_numpy("output0").shape == (1, 84, 8400)
        return [images], check_tensors

    def check_embedding(r: Any) -> None:
        emb = r.as_numpy("embedding")
        assert emb.shape[0] == 2
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    return [text("text", ["gpu slices", "cut inference cost"])], check_embedding


def test_every_example_pool_is_served(control_plane: LocalCluster, operator: Any, namespace: str, work: Path,
                                      servers: tuple[S3Server, Registry, HubMirror],
                                      worker_factory: Callable[..., Any]) -> None:
    import tritonclient.grpc as triton

    s3, registry, hub = servers
    publish_tiny_models(work, s3, registry, hub)
    control_plane.kubectl("create", "secret", "generic", "hf-token", "-n", namespace, "--from-literal=HF_TOKEN=hf_x")
    control_plane.kubectl("create", "secret", "generic", "models-s3", "-n", namespace,
                          f"--from-literal=AWS_ACCESS_KEY_ID={s3.access_key}",
                          f"--from-literal=AWS_SECRET_ACCESS_KEY={s3.secret_key}",
                          f"--from-literal=AWS_ENDPOINT_URL={s3.endpoint}", "--from-literal=AWS_REGION=us-east-1")
    served: list[str] = []
    for path in EXAMPLES:
        for pool in pools_in(path):
            apply(control_plane, pool, namespace)
            pods = replica_pods(control_plane, namespace, pool)
            for model in pool["spec"]["models"]:
                pod = pods[model["name"]]
                if model.get("runtime", {}).get("type", "gpupool") != "gpupool":
                    fetch = pod["spec"]["initContainers"][0]
                    env = local_env(fetch, pod, control_plane, namespace, work, registry, hub)
                    link = work / "mounts" / pod["metadata"]["name"] / "models" / "current"
                    out = subprocess.run([sys.executable, "-m", "gpupool_worker", "fetch", "--link", str(link)],
                                         env={**os.environ, **env, "PYTHONPATH": PYTHONPATH}, capture_output=True,
                                         text=True, timeout=300, check=False)
                    assert out.returncode == 0, out.stderr
                    assert (link / "config.json").is_file()
                    assert (link / "model.safetensors").is_file()
                    served.append(f"{path.name}:{model['name']} (fetched for {model['runtime']['type']})")
                    continue
                (container,) = pod["spec"]["containers"]
                w = worker_factory(None, env=local_env(container, pod, control_plane, namespace, work, registry, hub))
                inputs, check = request_for(model.get("task", "Auto"), model["name"])
                with triton.InferenceServerClient(w.url) as client:
                    assert client.is_model_ready(model["name"]), w.log()[-2000:]
                    check(client.infer(model["name"], inputs))
                w.terminate()
                served.append(f"{path.name}:{model['name']}")
            control_plane.kubectl("delete", "inferencepool", pool["metadata"]["name"], "-n", namespace,
                                  "--wait=true", "--timeout=60s")
    assert len(served) == sum(len(p["spec"]["models"]) for path in EXAMPLES for p in pools_in(path)), served
