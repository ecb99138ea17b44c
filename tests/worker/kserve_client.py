"""Drive a worker with the kserve SDK's gRPC client; print what came back as JSON.

Runs in the kserve virtualenv (see scripts/kserve_env.sh), never in the test process:
kserve's `inference.*` protobuf messages cannot share a process with tritonclient's.
Usage: python kserve_client.py HOST:PORT
"""

from __future__ import annotations

import asyncio
import json
import sys

import grpc
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest


async def main(url: str) -> dict[str, object]:
    client = InferenceGRPCClient(url, timeout=60)
    out: dict[str, object] = {
        "server_live": await client.is_server_live(),
        "server_ready": await client.is_server_ready(),
        "model_ready": await client.is_model_ready("minilm"),
    }
    texts = ["The cat sits on the mat.", "GPU slices cut the cost of inference."]
    text = InferInput("text", [len(texts)], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object), binary_data=True)
    response = await client.infer(InferRequest(model_name="minilm", infer_inputs=[text], request_id="k-1"))
    embedding = response.outputs[0].as_numpy()
    out["minilm"] = {
        "id": response.id, "name": response.outputs[0].name, "shape": list(embedding.shape),
        "embedding": embedding.tolist(),
        "parameters": {k: str(v) for k, v in (response.parameters or {}).items()},
    }
    a = np.arange(32, dtype=np.float32).reshape(2, 16)
    i0 = InferInput("INPUT0", [2, 16], "FP32")
    i0.set_data_from_numpy(a, binary_data=True)
    i1 = InferInput("INPUT1", [2, 16], "FP32")
    i1.set_data_from_numpy(np.ones_like(a), binary_data=True)
    add = await client.infer(InferRequest(model_name="add_sub", infer_inputs=[i0, i1]))
    out["add_sub"] = {o.name: o.as_numpy().tolist() for o in add.outputs}
    # concurrency through one client
    many = await asyncio.gather(*(
        client.infer(InferRequest(model_name="tiny_encoder", infer_inputs=[_text(f"text {i}")]))
        for i in range(16)))
    out["concurrent"] = [r.outputs[0].as_numpy().shape[0] for r in many]
    try:
        await client.infer(InferRequest(model_name="nope", infer_inputs=[_text("x")]))
        out["unknown_model"] = "no error"
    except grpc.RpcError as err:
        out["unknown_model"] = [str(err.code()), str(err.details())]
    await client.close()
    return out


def _text(s: str) -> InferInput:
    t = InferInput("text", [1], "BYTES")
    t.set_data_from_numpy(np.array([s.encode()], dtype=object), binary_data=True)
    return t


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1]))))
