"""Requests over a megabyte, through the real worker process and real clients: parsed and
converted off the event loop (server.servicer.OFF_LOOP_BYTES), with the same answers and the same
INVALID_ARGUMENT errors as small ones, while small requests keep being answered."""

from __future__ import annotations

import struct
from collections.abc import Callable

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2 as pb  # the same messages; ours would clash in one process

from gpupool_worker.engine.models.examples import write_minilm

from .conftest import WorkerProcess

# twice server.servicer.OFF_LOOP_BYTES (1 MiB; importing it would load our proto beside tritonclient's)
LARGE = 2 << 20
SENTENCE = "large requests are read off the event loop and answered like small ones "


@pytest.fixture(scope="module")
def large_worker(worker_factory: Callable[..., WorkerProcess], tmp_path_factory: pytest.TempPathFactory,
                 ) -> WorkerProcess:
    root = tmp_path_factory.mktemp("large-minilm")
    write_minilm(root / "minilm", max_batch_size=64)
    return worker_factory(root, env={"GPUPOOL_DRAIN_SECONDS": "0", "GPUPOOL_MAX_MESSAGE_BYTES": str(32 << 20)})


def text(*items: str) -> triton.InferInput:
    inp = triton.InferInput("text", [len(items)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in items], dtype=object))
    return inp


def raw_request(payload: bytes, count: int) -> bytes:
    request = pb.ModelInferRequest(model_name="minilm")
    request.inputs.add(name="text", datatype="BYTES", shape=[count])
    request.raw_input_contents.append(payload)
    return request.SerializeToString()


def test_a_large_request_gets_the_answers_its_texts_get_alone(large_worker: WorkerProcess) -> None:
    long = SENTENCE * (600_000 // len(SENTENCE))  # 600 KB each, 2.4 MB in all: off the loop
    texts = [f"{i} {long}" for i in range(4)]
    assert sum(len(t) for t in texts) > LARGE
    with triton.InferenceServerClient(large_worker.url) as client:
        big = client.infer("minilm", [text(*texts)], client_timeout=120).as_numpy("embedding")
        # each string is cut to what the model's 256 tokens can use: its first words alone give
        # the same embedding
        for i, t in enumerate(texts):
            alone = client.infer("minilm", [text(" ".join(t.split()[:300]))]).as_numpy("embedding")
            assert float(big[i] @ alone[0]) > 0.9999
        assert client.infer("minilm", [text("small after large")]).as_numpy("embedding").shape == (1, 384)


def test_large_malformed_requests_are_invalid_argument_naming_the_defect(large_worker: WorkerProcess) -> None:
    element = b"x" * LARGE
    with grpc.insecure_channel(large_worker.url, options=[("grpc.max_send_message_length", 32 << 20)]) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as err:  # not protobuf at all (parsed on a thread)
            call(b"\xff\xff\xff\xff" + element, timeout=30)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid inference.ModelInferRequest message" in str(err.value.details())
        # valid protobuf whose BYTES length prefix promises more than is there (converted on a thread)
        with pytest.raises(grpc.RpcError) as err:
            call(raw_request(struct.pack("<I", len(element) + 10) + element, 1), timeout=30)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "tensor 'text': BYTES element 0 declares" in str(err.value.details())
        # and a well-formed one of the same size is answered
        ok = pb.ModelInferResponse.FromString(call(raw_request(struct.pack("<I", len(element)) + element, 1),
                                                   timeout=60))
        assert list(ok.outputs[0].shape) == [1, 384]
