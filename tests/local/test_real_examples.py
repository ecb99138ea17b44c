"""Every example pool in examples/pools, applied as a user would, on a local cluster whose nodes are
all real kubelets (so no replica sits on a KWOK node, where nothing runs): an A100 node with
emulated GPUs and MIG slices (the demo's ``a100-mig``), an H100 node with two emulated whole GPUs
(for the tensor-parallel LLM) and a CPU node with this machine's cores. The operator, unchanged,
places them; the emulated NVIDIA MIG manager and device plugin serve the slices.

Each replica that can be served offline gets a real KServe v2 request through its pool's ready
endpoints (tritonclient), and the answer is checked: the real MiniLM on CPU, the emulated MIG
slice with the real model's output shape and its emulated label. A replica whose model is not on
this machine is not counted as serving, and the reason it gives is asserted:

- ``hf://`` sources without a mirror: the worker reports ``FetchFailed`` (its metrics, read with the
  operator's own parser) and stays not Ready;
- a source whose credentials Secret does not exist (``s3://`` with ``models-s3``, the LLM's
  ``hf-token``): the kubelet reports it cannot mount ``secret "..." not found``;
- the scale-to-zero detector from ``oci://registry.example.com`` (``minReplicas: 0``) has no replica.

No local model mirror stands in for the named models (bge-reranker-base, bge-small-en-v1.5, a
ResNet-50, Llama 3.1 70B, YOLOv8m): their weights are not on this machine, and random weights
served under their names would present a model that is not there.

Root and the node binaries (``gpupool local build --nodes``); skipped with what is missing named.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from support.polling import wait_until
from support.real_cluster import operator_on, real_node_cluster

from gpupool_operator.adapters import modelload, names
from gpupool_operator.local import endpoints, realnodes
from gpupool_operator.local.cluster import LocalCluster
from gpupool_operator.local.spec import parse

pytestmark = [pytest.mark.real_nodes, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "pools"
NS = "examples"
SPEC = """\
name: examples-real
pools:
  - name: a100-mig
    count: 0
    real: 1
    gpu: NVIDIA-A100-SXM4-80GB
    gpusPerNode: 3
    mig:
      strategy: mixed
      gpus:
        - {"3g.40gb": 1, "2g.20gb": 1, "1g.10gb": 2}
        - {"1g.10gb": 7}
        - {}
    taints:
      - {key: nvidia.com/gpu, value: present, effect: NoSchedule}
  - name: h100
    count: 0
    real: 1
    gpu: H100-80GB
    gpusPerNode: 2
    taints:
      - {key: nvidia.com/gpu, value: present, effect: NoSchedule}
  - name: cpu
    count: 0
    real: 1
"""
#: (pool, model) that serve offline: the model ships inside the worker
SERVED = {("quickstart", "all-minilm-l6-v2"), ("vision-and-embeddings", "minilm-embeddings")}
#: (pool, model) whose weights are not on this machine, and the reason each must give
UNREACHABLE = {
    ("reranker", "bge-reranker-base"): "FetchFailed",  # hf://BAAI/bge-reranker-base
    ("vision-and-embeddings", "bge-small-en"): "FetchFailed",  # hf://BAAI/bge-small-en-v1.5
    ("vision-and-embeddings", "resnet50-classifier"): 'secret "models-s3" not found',  # s3://, its Secret absent
    ("chat-llm", "llama-3-1-70b-instruct"): 'secret "hf-token" not found',  # hf:// via vLLM, its Secret absent
}
ZERO = {("vision-and-embeddings", "yolo-detector")}  # minReplicas 0, oci://registry.example.com



def _wait(what: str, check: Callable[[], Any], timeout_s: float = 180, every: float = 2.0,
          why: Callable[[], str] | None = None) -> Any:
    return wait_until(what, check, timeout_s, every, why)


def _pool_docs() -> list[dict[str, Any]]:
    docs = [d for f in sorted(EXAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    return [d for d in docs if d["kind"] == "InferencePool"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with real_node_cluster(tmp_path_factory.mktemp("examples")) as (cluster, nodes):
        t0 = time.monotonic()
        timings: dict[str, Any] = {}
        realnodes.start_spec_nodes(nodes, parse(yaml.safe_load(SPEC)), progress=lambda line: None)
        timings["all nodes Ready s"] = round(time.monotonic() - t0, 1)
        with operator_on(cluster, nodes, NS) as manager:
            yield {"cluster": cluster, "nodes": nodes, "manager": manager, "timings": timings}


def _json(cluster: LocalCluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def _replicas(cluster: LocalCluster) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for pod in _json(cluster, "pods", "-n", NS)["items"]:
        labels = pod["metadata"].get("labels") or {}
        if names.LABEL_POOL in labels and not pod["metadata"].get("deletionTimestamp"):
            out.setdefault((labels[names.LABEL_POOL], labels.get(names.LABEL_MODEL, "")), []).append(pod)
    return out


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def _events_about(cluster: LocalCluster, pod: str) -> str:
    events = _json(cluster, "events", "-n", NS, "--field-selector", f"involvedObject.name={pod}")["items"]
    return "\n".join(f"{e.get('reason')}: {e.get('message')}" for e in events)


def _pod_reason(cluster: LocalCluster, pod: dict[str, Any]) -> str:
    """What the replica itself and its kubelet say about why it does not serve."""
    said = [f"{f.reason}: {f.message}" for f in modelload.scrape_failures([pod], timeout_s=3)]
    return "\n".join([*said, _events_about(cluster, pod["metadata"]["name"])])


def _describe(cluster: LocalCluster) -> str:
    lines = []
    for (pool, model), pods in sorted(_replicas(cluster).items()):
        for p in pods:
            lines.append(f"{pool}/{model} {p['metadata']['name']} node={p['spec'].get('nodeName')} "
                         f"phase={p.get('status', {}).get('phase')} ready={_ready(p)}")
    for pool in _json(cluster, "inferencepools", "-n", NS)["items"]:
        lines.append(f"pool {pool['metadata']['name']}: "
                     + json.dumps([(c["type"], c["status"], c.get("reason"), c.get("message", "")[:200])
                                   for c in pool.get("status", {}).get("conditions", [])]))
    return "\n".join(lines)


def _answer(address: str, model: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(address)
    try:
        meta = client.get_model_metadata(model, as_json=True)
        result = client.infer(model, endpoints.request_inputs(meta, b"GPU slices cut inference cost"),
                              client_timeout=60)
        return meta, {o["name"]: np.asarray(result.as_numpy(o["name"])) for o in meta["outputs"]}
    finally:
        client.close()


def _embed(address: str, model: str, texts: list[bytes]) -> np.ndarray:
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(address)
    try:
        text = triton.InferInput("text", [len(texts)], "BYTES")
        text.set_data_from_numpy(np.array(texts, dtype=object))
        return np.asarray(client.infer(model, [text], client_timeout=60).as_numpy("embedding"))
    finally:
        client.close()


def test_every_example_pool_on_real_nodes_serves_what_it_can_and_says_why_not_the_rest(env: dict[str, Any]) -> None:
    cluster: LocalCluster = env["cluster"]
    nodes: realnodes.RealNodes = env["nodes"]
    api = cluster.api_client()
    docs = _pool_docs()
    declared = {(d["metadata"]["name"], m["name"]) for d in docs for m in d["spec"]["models"]}
    assert declared == SERVED | set(UNREACHABLE) | ZERO  # a new example must be sorted into one of these
    applied = time.monotonic()
    cluster.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump_all(docs))

    # every offline-servable replica Ready, on a real node, reached through its pool's endpoints
    served: dict[tuple[str, str], list[endpoints.Endpoint]] = {}
    for pool, model in sorted(SERVED):
        served[(pool, model)] = _wait(f"{pool}/{model} to serve", lambda p=pool, m=model: endpoints.endpoints(  # type: ignore[misc]
            api, NS, p, m), 300, why=lambda: _describe(cluster))
    env["timings"]["offline-servable replicas Ready s after apply"] = round(time.monotonic() - applied, 1)
    real_names = set(nodes.names())
    for (pool, model), eps in served.items():
        for ep in eps:
            assert ep.node in real_names
            _, out = _answer(ep.address, model)
            assert set(out) == {"embedding"}
            emb = out["embedding"]
            assert emb.shape == (1, 384)
            assert np.isfinite(emb).all()
            assert abs(float(np.linalg.norm(emb)) - 1.0) < 1e-3  # unit vectors (real MiniLM; emulated: by contract)
            logs = cluster.kubectl("logs", "-n", NS, ep.pod).stdout
            if pool == "quickstart":  # CPU: the real model, so its embeddings carry meaning
                assert "EMULATED" not in logs
                a, b, c = _embed(ep.address, model, [b"GPU slices cut inference cost",
                                                     b"MIG partitions make serving models cheaper",
                                                     b"the cat slept on the warm windowsill"])
                assert float(a @ b) > float(a @ c) + 0.1
            else:  # a MIG slice of the emulated A100: the real model's shape, labelled emulated
                assert "EMULATED A100-80GB MIG 1g.10gb" in logs

    # the others: placed on real nodes, not serving, and saying why in their own words
    def reasons() -> dict[tuple[str, str], str] | None:
        replicas = _replicas(cluster)
        out: dict[tuple[str, str], str] = {}
        for key, want in UNREACHABLE.items():
            pods = replicas.get(key, [])
            if not pods:
                return None
            said = [_pod_reason(cluster, p) for p in pods]
            if not all(want in s for s in said):
                return None
            out[key] = next(line for line in said[0].splitlines() if want in line)
        return out

    said = _wait("every unreachable model's replicas to report why", reasons, 240,
                 why=lambda: _describe(cluster) + "\n" + "\n".join(
                     f"{k}: {[_pod_reason(cluster, p)[-300:] for p in v]}" for k, v in _replicas(cluster).items()
                     if k in UNREACHABLE))
    replicas = _replicas(cluster)
    for key in UNREACHABLE:
        for pod in replicas[key]:
            assert pod["spec"].get("nodeName") in real_names, pod["spec"].get("nodeName")
            assert not _ready(pod)
    for key in ZERO:
        assert key not in replicas
    for pool, model in UNREACHABLE:
        assert not endpoints.endpoints(api, NS, pool, model)  # never an endpoint a client would be sent to

    # the pools' status counts only what serves
    ready = {}
    for pool in _json(cluster, "inferencepools", "-n", NS)["items"]:
        for m in pool.get("status", {}).get("models", []):
            ready[(pool["metadata"]["name"], m["name"])] = int(m.get("readyReplicas") or 0)
    assert {k: v for k, v in ready.items() if v} == {k: len(served[k]) for k in SERVED}, ready
    llm = _json(cluster, "inferencepool", "chat-llm", "-n", NS)
    (llm_pod,) = replicas[("chat-llm", "llama-3-1-70b-instruct")]
    assert llm_pod["metadata"]["annotations"].get(names.ANN_GPUS, "").count(",") == 1  # tensor parallel: 2 GPUs
    assert llm["status"]["models"][0].get("readyReplicas", 0) == 0
    for pool in {p for p, _ in UNREACHABLE}:  # a pool with a replica that cannot serve is not Ready
        status = _json(cluster, "inferencepool", pool, "-n", NS)["status"]
        conds = {c["type"]: c["status"] for c in status["conditions"]}
        assert conds.get("Ready") != "True", (pool, conds)
    print(f"\nMEASURED {json.dumps(env['timings'])}; reasons: "
          f"{json.dumps({'/'.join(k): v[:200] for k, v in said.items()})}", file=sys.__stderr__)
