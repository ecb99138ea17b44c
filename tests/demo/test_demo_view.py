"""The demo's live view shows what the cluster holds, and a dash where nothing measured a figure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from gpupool_operator.api import InferencePoolStatus
from gpupool_operator.cli.demo_view import ClusterView, render, summary_line


def _pool(name: str, status: dict[str, Any]) -> dict[str, Any]:
    # the status goes through the API model, so the view reads the wire names the operator writes
    wire = InferencePoolStatus.model_validate(status).model_dump(by_alias=True, exclude_none=True, mode="json")
    return {"metadata": {"name": name, "generation": 1}, "status": wire}


def _pod(name: str, node: str | None, ready: bool = False, gated: bool = False, emulated: bool = False) -> dict:
    return {
        "metadata": {"name": name, "annotations": {"gpupool.io/engine": "emulated"} if emulated else {}},
        "spec": {"nodeName": node, **({"schedulingGates": [{"name": "gpupool.io/mig"}]} if gated else {})},
        "status": {"phase": "Running" if node else "Pending",
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def _text(view: ClusterView) -> str:
    console = Console(record=True, width=220, color_system=None)
    console.print(render(view))
    return console.export_text()


def test_the_view_shows_shapes_states_and_only_measured_money() -> None:
    measured = _pool("embeddings", {
        "observedGeneration": 1, "desiredReplicas": 2, "readyReplicas": 2, "servingReplicas": 1,
        "usdPerHour": "2.37", "usdPerMillionInferences": "0.4121",
        "conditions": [{"type": "Ready", "status": "True", "reason": "AllReplicasReady", "message": "",
                        "lastTransitionTime": "2026-12-04T18:00:00Z"}],
        "models": [{"name": "minilm", "desiredReplicas": 2, "readyReplicas": 2, "servingReplicas": 1, "queueDepth": 3,
                    "inferencesPerSecond": "41.5", "usdPerHour": "2.37", "usdPerMillionInferences": "0.4121",
                    "replicas": [
                        {"pod": "emb-0", "node": "a100-0", "resource": "nvidia.com/mig-1g.10gb", "usdPerHour": "0.49"},
                        {"pod": "emb-1", "node": "cpu-0", "resource": "cpu", "usdPerHour": "1.88"}]}],
    })
    waiting = _pool("reranker", {
        "observedGeneration": 1, "desiredReplicas": 1, "readyReplicas": 0, "usdPerHour": "1.72",
        "models": [{"name": "bge", "desiredReplicas": 1, "readyReplicas": 0,
                    "replicas": [{"pod": "rr-0", "node": "a100-1", "resource": "nvidia.com/mig-3g.40gb"}]}],
    })
    node = {"metadata": {"name": "a100-1", "labels": {
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/mig.config": "gpupool-a100-1",
        "nvidia.com/mig.config.state": "pending"}},
        "status": {"allocatable": {"nvidia.com/mig-3g.40gb": "2", "nvidia.com/mig-1g.10gb": "0"}}}
    cpu = {"metadata": {"name": "cpu-0", "labels": {}}, "status": {"allocatable": {"cpu": "16"}}}
    event = {"type": "Normal", "reason": "ScaledUp", "involvedObject": {"kind": "InferencePool", "name": "embeddings"},
             "message": "minilm 1 -> 2 (+1 cpu): queue 3 over target", "lastTimestamp": "2026-12-04T18:01:02Z"}
    view = ClusterView(pools=[measured, waiting], nodes=[node, cpu], events=[event], elapsed_s=42,
                       pods=[_pod("emb-0", "a100-0", ready=True, emulated=True), _pod("emb-1", "cpu-0", ready=True),
                             _pod("rr-0", "a100-1", gated=True)])
    text = _text(view)

    assert "1 x cpu, 1 x mig-1g.10gb (emulated GPU)" in text
    assert "0.4121" in text
    assert "41.5" in text
    rerank_line = next(line for line in text.splitlines() if "   bge " in line)
    assert "1 gated (MIG)" in rerank_line
    assert "0.4121" not in rerank_line
    assert "-" in rerank_line
    node_line = next(line for line in text.splitlines() if "a100-1" in line and "gpupool-a100-1" in line)
    assert "pending" in node_line
    assert "3g.40gb: 2" in node_line
    assert "1g.10gb" not in node_line
    assert "and 1 CPU node(s)" in text
    assert "ScaledUp" in text
    assert "18:01:02" in text
    # READY is the kubelet's (a KWOK node's too); SERVING only the replicas on nodes that are not KWOK fakes
    model_line = next(line for line in text.splitlines() if "  minilm " in line)
    assert [c.strip() for c in model_line.split("│")[3:6]] == ["2/2", "1", "3"]
    assert summary_line(view) == ("   42 s   0/2 pools placed   2/3 replicas ready (1 serving, not on KWOK fake nodes)"
                                  "   $4.09/h planned")


def test_a_replica_that_does_not_serve_says_why_in_its_own_words() -> None:
    from gpupool_operator.adapters.modelload import LoadFailure, load_condition
    from gpupool_operator.cli.demo import why_not_serving

    failures = [LoadFailure("bge-small-en", "p", "FetchFailed",
                            "hf://BAAI/bge-small-en-v1.5 at https://huggingface.co: Connection refused"),
                LoadFailure("minilm", "p2", "FetchFailed", "builtin://x: not here")]
    condition = load_condition(failures, 1, datetime(2026, 12, 6, tzinfo=UTC)).model_dump(by_alias=True, mode="json")
    pool = {"status": {"conditions": [condition]}}
    fake = {"h100-0"}
    assert why_not_serving(_pod("p", "cpu-real-0", ready=True), pool, "bge-small-en", fake) == ""
    on_kwok = why_not_serving(_pod("p", "h100-0", ready=True), pool, "x", fake)
    assert on_kwok == "on a KWOK fake node: nothing runs there"
    assert why_not_serving(_pod("p", None, gated=True), pool, "x", fake) == "gated until its MIG slice exists"
    assert why_not_serving(None, pool, "x", fake) == "no pod yet"
    # the worker's own reason for this replica, through the pool's condition (as the operator writes it)
    said = why_not_serving(_pod("p", "a100-real-0"), pool, "bge-small-en", fake)
    assert said == "FetchFailed: hf://BAAI/bge-small-en-v1.5 at https://huggingface.co: Connection refused"
    # the kubelet's reason when the container cannot even start, or its latest Warning Event
    waiting = _pod("q", "a100-real-0")
    waiting["status"]["containerStatuses"] = [{"name": "worker", "state": {"waiting": {
        "reason": "CreateContainerConfigError", "message": 'secret "models-s3" not found'}}}]
    kubelet_said = why_not_serving(waiting, pool, "resnet50", fake)
    assert kubelet_said == 'CreateContainerConfigError: secret "models-s3" not found'
    mounting = _pod("r", "a100-real-0")
    event = {"r": 'FailedMount: MountVolume.SetUp failed for volume "credentials" : secret "models-s3" not found'}
    assert why_not_serving(mounting, pool, "resnet50", fake, event) == event["r"]
    assert why_not_serving(_pod("s", "a100-real-0"), pool, "other-model", fake) == "starting (not Ready yet)"
