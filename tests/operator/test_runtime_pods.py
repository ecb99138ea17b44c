"""Runtimes and sources on the real control plane: the API server refuses what cannot be served
(with the field named), and the operator's replica pods carry the runtime, GPUs, volumes, probes
and queue signal (KWOK runs the pods; the runtime images themselves need not run here)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_helpers import apply, get_json, live_pods, wait_until

from gpupool_operator.adapters import runtimes
from gpupool_operator.local.cluster import LocalCluster

ROOT = Path(__file__).resolve().parents[2]


def example(name: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "pools" / name).read_text())
    return body


def refused(cluster: LocalCluster, namespace: str, body: dict[str, Any]) -> str:
    out = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(body), check=False)
    assert out.returncode != 0, f"accepted: {body}"
    return str(out.stderr)


def quickstart(**model: Any) -> dict[str, Any]:
    body = example("quickstart-minilm-cpu.yaml")
    body["spec"]["models"][0].update(model)
    return body


@pytest.mark.parametrize(("model", "words"), [
    ({"source": {"uri": "gs://bucket/minilm"}}, ["spec.models[0].source.uri", "gs:// is not supported",
                                                 "storage.googleapis.com"]),
    ({"source": {"uri": "s3://b/m", "sha256": "a" * 64}}, ["spec.models[0].source.sha256", "https://"]),
    ({"source": {"uri": "s3://b/m"}, "task": "TextGeneration"}, ["spec.models[0].task", "LLM runtime"]),
    ({"source": {"uri": "s3://b/m", "format": "TorchScript"}, "task": "Reranking"},
     ["spec.models[0].task", "TorchScript and TorchExport serve Tensors"]),
    ({"source": {"uri": "s3://b/m", "format": "ONNX"}, "runtime": {"type": "vllm"}},
     ["spec.models[0].runtime", "must be SafeTensors"]),
    ({"source": {"uri": "s3://b/m"}, "runtime": {"type": "custom"}}, ["spec.models[0].runtime.image",
                                                                      "needs image and port"]),
    ({"source": {"uri": "s3://b/m"}, "tensors": {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
                                                 "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1]}]}},
     ["spec.models[0].tensors", "TorchScript and TorchExport"]),
])
def test_the_api_server_refuses_what_cannot_be_served(control_plane: LocalCluster, namespace: str,
                                                       model: dict[str, Any], words: list[str]) -> None:
    body = quickstart(**model)
    body["spec"]["models"][0]["source"].setdefault("format", "SafeTensors")
    err = refused(control_plane, namespace, body)
    for word in words:
        assert word in err, err


def _pods_of(cluster: LocalCluster, namespace: str, pool: str, count: int) -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]]:
        mine = [p for p in live_pods(cluster, namespace)
                if p["metadata"].get("labels", {}).get("gpupool.io/inferencepool") == pool]
        return mine if len(mine) >= count else []

    return wait_until(found, 90, f"{count} pod(s) of pool {pool}")


def test_the_llm_example_runs_vllm_pods_with_two_gpus(control_plane: LocalCluster, operator: Any,
                                                      namespace: str) -> None:
    control_plane.kubectl("create", "secret", "generic", "hf-token", "-n", namespace, "--from-literal=HF_TOKEN=hf_x")
    apply(control_plane, example("llm-tensor-parallel.yaml"), namespace)
    (pod,) = _pods_of(control_plane, namespace, "chat-llm", 1)
    spec = pod["spec"]
    (server,) = spec["containers"]
    assert server["name"] == "vllm"
    args = server["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert spec["initContainers"][0]["args"] == ["fetch", "--link", "/models/current"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["source-credentials"]["secret"]["secretName"] == "hf-token"
    wait_until(lambda: get_json(control_plane, "pod", pod["metadata"]["name"], "-n", namespace)["status"].get(
        "phase") == "Running", 60, "the vLLM pod scheduled on a GPU pair and running (KWOK)")
    node = get_json(control_plane, "pod", pod["metadata"]["name"], "-n", namespace)["spec"]["nodeName"]
    labels = get_json(control_plane, "node", node)["metadata"]["labels"]
    assert labels["nvidia.com/gpu.product"].startswith(("NVIDIA-H100", "NVIDIA-B200", "NVIDIA-H200"))
    # the queue signal the scaler reads comes from the pod as the API server stores it
    signal = runtimes.signal_of_pod(pod)
    assert signal == runtimes.QueueSignal("vllm", "vllm:num_requests_waiting", 8000, model_label="model_name")
    text = ('# TYPE vllm:num_requests_waiting gauge\n'
            'vllm:num_requests_waiting{engine="0",model_name="llama-3-1-70b-instruct"} 5.0\n')
    assert runtimes.queue_depth(text, signal, "llama-3-1-70b-instruct") == 5.0
    svc = get_json(control_plane, "service", "-n", namespace, "-l", "gpupool.io/inferencepool=chat-llm")["items"][0]
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("http", 8000)]


def test_a_worker_pod_mounts_its_secret_and_claim_read_only(control_plane: LocalCluster, operator: Any,
                                                            namespace: str) -> None:
    body = quickstart(source={"uri": "pvc://models/minilm", "format": "SafeTensors",
                              "credentialsSecretName": "unused-but-mounted"})
    body["metadata"]["name"] = "from-pvc"
    apply(control_plane, copy.deepcopy(body), namespace)
    (pod,) = _pods_of(control_plane, namespace, "from-pvc", 1)
    (worker,) = pod["spec"]["containers"]
    mounts = {m["name"]: m for m in worker["volumeMounts"]}
    assert mounts["model-pvc"]["readOnly"] is True
    assert mounts["source-credentials"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["model-pvc"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    env = {e["name"]: e.get("value", "") for e in worker["env"]}
    assert env["GPUPOOL_MODEL_URI"] == "pvc://models/minilm"
    assert env["GPUPOOL_PVC_ROOT"] == runtimes.PVC_ROOT


def test_a_replica_that_cannot_fetch_sets_model_load_failed(control_plane: LocalCluster, operator: Any,
                                                            namespace: str) -> None:
    """The fetch init container's termination message (what the kubelet records when
    ``gpupool-worker fetch`` exits 3) becomes the pool's ModelLoadFailed condition and an Event."""
    import json

    control_plane.kubectl("create", "secret", "generic", "hf-token", "-n", namespace, "--from-literal=HF_TOKEN=bad")
    apply(control_plane, example("llm-tensor-parallel.yaml"), namespace)
    (pod,) = _pods_of(control_plane, namespace, "chat-llm", 1)
    name = pod["metadata"]["name"]
    wait_until(lambda: get_json(control_plane, "pod", name, "-n", namespace)["status"].get("phase") == "Running",
               60, "the pod running (KWOK)")
    message = ("CredentialsRejected: hf://meta-llama/Llama-3.1-70B-Instruct at https://huggingface.co: repository "
               "not found, or the HF_TOKEN in the Secret mounted at /var/run/gpupool/source-credentials does not "
               "grant access to it")
    status = {"status": {"initContainerStatuses": [{
        "name": "fetch-model", "image": "ghcr.io/gpupool/worker:0.1.0", "imageID": "", "ready": False,
        "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 3, "reason": "Error", "message": message}}}]}}
    control_plane.kubectl("patch", "pod", name, "-n", namespace, "--subresource=status", "--type=merge",
                          "-p", json.dumps(status))

    def failed() -> dict[str, Any] | None:
        obj = get_json(control_plane, "inferencepool", "chat-llm", "-n", namespace)
        for cond in (obj.get("status") or {}).get("conditions", []):
            if cond["type"] == "ModelLoadFailed" and cond["status"] == "True":
                return dict(cond)
        return None

    cond = wait_until(failed, 90, "ModelLoadFailed on the pool")
    assert cond["reason"] == "CredentialsRejected"
    assert "does not grant access" in cond["message"]
    assert name in cond["message"]
    events = wait_until(lambda: [e for e in get_json(control_plane, "events", "-n", namespace)["items"]
                                 if e["reason"] == "ModelLoadFailed"], 60, "a ModelLoadFailed Event")
    assert events[0]["involvedObject"]["kind"] == "InferencePool"
    assert "CredentialsRejected" in events[0]["message"]
