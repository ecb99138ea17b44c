"""The worker as a black box: a real subprocess, driven by tritonclient (NVIDIA's client).

Covers the protocol surface (health, metadata, inference on every model kind, statistics with
cost, repository index), bad input with the exact status codes, concurrency, and the extras a
production server needs (gRPC health service, reflection, Prometheus metrics).
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from .conftest import PRICE_ENV, WorkerProcess


@pytest.fixture(scope="module")
def client(worker: WorkerProcess) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(worker.url)
    yield c
    c.close()


@pytest.fixture(scope="module")
def stub(worker: WorkerProcess) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    """Triton's own generated stub, to send requests tritonclient's helpers would never build."""
    with grpc.insecure_channel(worker.url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def text_input(items: list[str]) -> triton.InferInput:
    inp = triton.InferInput("text", [len(items)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in items], dtype=object))
    return inp


def fp32_input(name: str, array: np.ndarray) -> triton.InferInput:
    inp = triton.InferInput(name, list(array.shape), "FP32")
    inp.set_data_from_numpy(array.astype(np.float32))
    return inp


def status_of(call: object) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as err:
        call()  # type: ignore[operator]
    return str(err.value.status()), str(err.value.message())


# -- health and metadata --------------------------------------------------------------------------

def test_server_is_live_ready_and_describes_itself(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "gpupool-worker"
    assert "statistics" in meta["extensions"]


def test_every_example_model_is_ready_and_indexed(client: triton.InferenceServerClient) -> None:
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {m["name"]: m["state"] for m in index} == {
        "add_sub": "READY", "minilm": "READY", "mlp": "READY", "tiny_encoder": "READY"}
    for name in ("add_sub", "minilm", "mlp", "tiny_encoder"):
        assert client.is_model_ready(name)
        assert client.is_model_ready(name, "1")
    assert not client.is_model_ready("minilm", "7")


def test_model_metadata_declares_tensors(client: triton.InferenceServerClient) -> None:
    meta = client.get_model_metadata("minilm", as_json=True)
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": ["-1"]}]
    assert meta["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": ["-1", "384"]}]
    add_sub = client.get_model_metadata("add_sub", as_json=True)
    assert add_sub["platform"] == "pytorch_torchscript"
    assert [i["name"] for i in add_sub["inputs"]] == ["INPUT0", "INPUT1"]


# -- inference ------------------------------------------------------------------------------------

def test_minilm_embeds_text_and_reports_its_cost(client: triton.InferenceServerClient) -> None:
    result = client.infer("minilm", [text_input(["A man is eating food.", "Un homme mange."])],
                          request_id="req-1")
    embedding = result.as_numpy("embedding")
    assert embedding.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)
    response = result.get_response()
    assert response.id == "req-1"
    params = response.parameters
    assert params["cost_usd"].double_param > 0
    assert params["busy_ns"].int64_param > 0
    expected = params["busy_ns"].int64_param * 6.88 * 0.375 / 3600e9
    assert params["cost_usd"].double_param == pytest.approx(expected, rel=1e-6)
    # per inference with the replica's idle time charged (60 s window): at least the busy share
    assert params["cost_per_inference_idle_charged_usd"].double_param >= params["cost_usd"].double_param / 2


def test_similar_sentences_embed_closer_than_unrelated_ones(client: triton.InferenceServerClient) -> None:
    result = client.infer("minilm", [text_input(
        ["The cat sits on the mat.", "A cat is sitting on a mat.", "Quarterly GPU prices fell."])])
    e = result.as_numpy("embedding")
    assert e[0] @ e[1] > e[0] @ e[2] + 0.3


def test_add_sub_torchscript_and_requested_outputs(client: triton.InferenceServerClient) -> None:
    a = np.arange(48, dtype=np.float32).reshape(3, 16)
    b = np.full((3, 16), 2.0, dtype=np.float32)
    result = client.infer("add_sub", [fp32_input("INPUT0", a), fp32_input("INPUT1", b)],
                          outputs=[triton.InferRequestedOutput("OUTPUT1")])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    assert result.as_numpy("OUTPUT0") is None


def test_mlp_torch_export_returns_probabilities(client: triton.InferenceServerClient) -> None:
    x = np.random.default_rng(3).standard_normal((5, 8)).astype(np.float32)
    probabilities = client.infer("mlp", [fp32_input("x", x)]).as_numpy("probabilities")
    assert probabilities.shape == (5, 4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_typed_contents_work_as_well_as_raw(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = service_pb2.ModelInferRequest(model_name="add_sub")
    for name in ("INPUT0", "INPUT1"):
        tensor = request.inputs.add(name=name, datatype="FP32", shape=[1, 16])
        tensor.contents.fp32_contents.extend([1.5] * 16)
    response = stub.ModelInfer(request)
    out = np.frombuffer(response.raw_output_contents[0], dtype=np.float32)
    np.testing.assert_array_equal(out, np.full(16, 3.0, np.float32))


async def test_concurrent_clients_get_their_own_answers(worker: WorkerProcess) -> None:
    sentences = [f"sentence number {i} about gpus and queues" for i in range(24)]
    async with triton_aio.InferenceServerClient(worker.url) as aclient:
        sequential = []
        for s in sentences[:4]:
            r = await aclient.infer("minilm", [text_input([s])])
            sequential.append(r.as_numpy("embedding")[0])

        async def one(s: str) -> tuple[np.ndarray, int]:
            r = await aclient.infer("minilm", [text_input([s])])
            return r.as_numpy("embedding")[0], r.get_response().parameters["batch_size"].int64_param

        results = await asyncio.gather(*(one(s) for s in sentences))
    for i in range(4):
        np.testing.assert_allclose(results[i][0], sequential[i], atol=1e-5)
    assert all(batch >= 1 for _, batch in results)
    # with 24 requests in flight at once, at least some shared a batch
    assert max(batch for _, batch in results) > 1


# -- statistics and cost --------------------------------------------------------------------------

def test_statistics_add_up_and_carry_cost(client: triton.InferenceServerClient,
                                          stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    client.infer("tiny_encoder", [text_input(["hello world"])])
    stats = client.get_inference_statistics("tiny_encoder", as_json=True)["model_stats"][0]
    assert int(stats["inference_count"]) >= 1
    assert int(stats["execution_count"]) >= 1
    assert int(stats["inference_stats"]["success"]["count"]) >= 1
    assert sum(int(b["batch_size"]) * int(b["compute_infer"]["count"]) for b in stats["batch_stats"]) \
        == int(stats["inference_count"])
    # cost is a gpupool extension (field 100); Triton's proto skips it, so read the raw bytes with
    # our own message definition compiled into a private pool
    raw = stub.ModelStatistics(service_pb2.ModelStatisticsRequest(name="tiny_encoder"))
    from .proto_util import own_message

    ours = own_message("ModelStatisticsResponse").FromString(raw.SerializeToString())
    cost = ours.model_stats[0].cost
    assert cost.price_per_hour_usd == pytest.approx(float(PRICE_ENV["GPUPOOL_PRICE_PER_HOUR"]))
    assert cost.device_share == pytest.approx(float(PRICE_ENV["GPUPOOL_DEVICE_SHARE"]))
    assert cost.accelerator == PRICE_ENV["GPUPOOL_ACCELERATOR"]
    assert cost.mig_profile == PRICE_ENV["GPUPOOL_MIG_PROFILE"]
    assert cost.busy_ns > 0
    assert cost.total_usd == pytest.approx(cost.busy_ns * 6.88 * 0.375 / 3600e9, rel=1e-6)
    assert cost.per_inference_usd == pytest.approx(cost.total_usd / ours.model_stats[0].inference_count)
    # idle time charged: the replica's seconds up, priced, over its inferences; never below busy-only
    assert cost.replica_seconds > 0
    assert cost.window_seconds == 60
    assert cost.window_inference_count >= 1
    assert cost.per_inference_idle_charged_usd >= cost.per_inference_usd > 0
    assert cost.per_inference_idle_charged_window_usd >= cost.per_inference_busy_window_usd > 0


def test_all_model_statistics_at_once(client: triton.InferenceServerClient) -> None:
    names = [m["name"] for m in client.get_inference_statistics(as_json=True)["model_stats"]]
    assert names == ["add_sub", "minilm", "mlp", "tiny_encoder"]


def test_prometheus_metrics_expose_queue_cost_and_latency(worker: WorkerProcess,
                                                          client: triton.InferenceServerClient) -> None:
    client.infer("tiny_encoder", [text_input(["metrics please"])])
    body = urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=10).read().decode()
    for needle in (
        'gpupool_worker_queue_depth{model="tiny_encoder"}',
        'gpupool_worker_inflight_requests{model="tiny_encoder"}',
        'gpupool_worker_cost_usd_total{model="tiny_encoder"}',
        'gpupool_worker_cost_per_inference_usd{basis="busy",model="tiny_encoder",window="lifetime"}',
        'gpupool_worker_cost_per_inference_usd{basis="idle_charged",model="tiny_encoder",window="60s"}',
        'gpupool_worker_request_duration_seconds_bucket{le="0.5",model="tiny_encoder"}',
        'gpupool_worker_batch_size_count{model="tiny_encoder"}',
        "gpupool_worker_price_per_hour_usd 6.88",
        "gpupool_worker_device_share 0.375",
        'mig_profile="3g.40gb"',
    ):
        assert needle in body, needle
    prefix = 'gpupool_worker_cost_usd_total{model="tiny_encoder"}'
    cost_line = next(line for line in body.splitlines() if line.startswith(prefix))
    assert float(cost_line.split()[-1]) > 0


# -- bad input --------------------------------------------------------------------------------------

def test_unknown_model_is_not_found(client: triton.InferenceServerClient) -> None:
    code, message = status_of(lambda: client.infer("nope", [text_input(["x"])]))
    assert code == "StatusCode.NOT_FOUND"
    assert "unknown model 'nope'" in message
    code, _ = status_of(lambda: client.get_model_metadata("nope"))
    assert code == "StatusCode.NOT_FOUND"
    code, message = status_of(lambda: client.infer("minilm", [text_input(["x"])], model_version="9"))
    assert code == "StatusCode.NOT_FOUND"
    assert "no version '9'" in message


@pytest.mark.parametrize(
    ("model", "inputs", "fragment"),
    [
        ("add_sub", lambda: [fp32_input("INPUT0", np.zeros((1, 16)))], "missing input 'INPUT1'"),
        ("add_sub", lambda: [fp32_input("INPUT0", np.zeros((1, 16))), fp32_input("INPUT1", np.zeros((1, 16))),
                             fp32_input("INPUT2", np.zeros((1, 16)))], "unexpected input 'INPUT2'"),
        ("add_sub", lambda: [fp32_input("INPUT0", np.zeros((1, 15))), fp32_input("INPUT1", np.zeros((1, 15)))],
         "input 'INPUT0' has shape [1, 15], model 'add_sub' expects [-1, 16]"),
        ("add_sub", lambda: [fp32_input("INPUT0", np.zeros((9, 16))), fp32_input("INPUT1", np.zeros((9, 16)))],
         "batch of 9 rows exceeds max_batch_size 8"),
        ("add_sub", lambda: [fp32_input("INPUT0", np.zeros((2, 16))), fp32_input("INPUT1", np.zeros((3, 16)))],
         "inputs disagree on the batch dimension"),
        ("minilm", lambda: [fp32_input("text", np.zeros((2,)))],
         "input 'text' has datatype FP32, model 'minilm' expects BYTES"),
    ],
)
def test_malformed_requests_are_invalid_argument_naming_the_tensor(
    client: triton.InferenceServerClient, model: str, inputs: object, fragment: str,
) -> None:
    code, message = status_of(lambda: client.infer(model, inputs()))  # type: ignore[operator]
    assert code == "StatusCode.INVALID_ARGUMENT"
    assert fragment in message


def _raw_request(model: str, tensors: list[tuple[str, str, list[int], bytes]]) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, datatype, shape, raw in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(raw)
    return request


@pytest.mark.parametrize(
    ("request_factory", "fragment"),
    [
        (lambda: _raw_request("add_sub", [("INPUT0", "FP32", [1, 16], b"\0" * 60),
                                          ("INPUT1", "FP32", [1, 16], b"\0" * 64)]),
         "input 'INPUT0': raw content has 60 bytes, but shape [1, 16] of FP32 needs 64"),
        (lambda: _raw_request("minilm", [("text", "BYTES", [2], b"\x05\0\0\0hello")]),
         "tensor 'text': BYTES payload ends after 1 of 2 elements"),
        (lambda: _raw_request("minilm", [("text", "BYTES", [1], b"\x09\0\0\0hi")]),
         "tensor 'text': BYTES element 0 declares 9 bytes but only 2 remain"),
        (lambda: _raw_request("minilm", [("text", "BYTES", [1], b"\x02\0\0\0\xff\xfe")]),
         "tensor 'text': element 0 is not valid UTF-8"),
        (lambda: _raw_request("minilm", [("text", "STRING", [1], b"")]),
         "tensor 'text': unknown datatype 'STRING'"),
        (lambda: _raw_request("add_sub", [("INPUT0", "FP32", [1, -16], b""), ("INPUT1", "FP32", [1, 16], b"")]),
         "input 'INPUT0' has a negative dimension"),
        (lambda: service_pb2.ModelInferRequest(model_name="add_sub"), "has no inputs"),
    ],
)
def test_malformed_payloads_are_invalid_argument(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, request_factory: object, fragment: str,
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request_factory())  # type: ignore[operator]
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in str(err.value.details())


def test_the_worker_survives_every_bad_request(client: triton.InferenceServerClient) -> None:
    # after the whole bad-input barrage above, it still answers correctly
    result = client.infer("tiny_encoder", [text_input(["still alive"])])
    assert result.as_numpy("embedding").shape == (1, 32)
    assert client.is_server_ready()


# -- standard gRPC services ---------------------------------------------------------------------------

def test_grpc_health_service_reports_serving(worker: WorkerProcess) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(worker.url) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_inference_service(worker: WorkerProcess) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(worker.url) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        services = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services
