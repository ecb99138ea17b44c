"""The floor for per-request overhead: a grpc.aio GRPCInferenceService that answers ModelInfer with a
precomputed add_sub response and does nothing else (no parsing, no model). Same stubs, same options.

    python -m benchmarks.worker._null_server PORT
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpc
import numpy as np

from gpupool_proto import inference_pb2 as pb
from gpupool_proto import inference_pb2_grpc as pb_grpc


class Null(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self) -> None:
        out = pb.ModelInferResponse(model_name="add_sub", model_version="1")
        for name in ("OUTPUT0", "OUTPUT1"):
            out.outputs.add(name=name, datatype="FP32", shape=[1, 16])
            out.raw_output_contents.append(np.zeros(16, np.float32).tobytes())
        self._out = out

    async def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:
        return self._out

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)


async def main(port: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Null(), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
