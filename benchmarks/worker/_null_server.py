"""The floor for per-request overhead: a grpc.aio GRPCInferenceService that answers ModelInfer with a
precomputed add_sub response and does nothing else (no parsing, no model). Same stubs, same options.

With a TorchScript file it also calls that program once per request on fixed [1, 16] inputs (and
still answers the precomputed response): the floor plus the model call alone, no serving code.

    python -m benchmarks.worker._null_server PORT [MODEL.pt]
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
    def __init__(self, program: Any = None) -> None:
        self._program = program
        if program is not None:
            import torch

            self._inputs = (torch.ones(1, 16), torch.ones(1, 16))
        out = pb.ModelInferResponse(model_name="add_sub", model_version="1")
        for name in ("OUTPUT0", "OUTPUT1"):
            out.outputs.add(name=name, datatype="FP32", shape=[1, 16])
            out.raw_output_contents.append(np.zeros(16, np.float32).tobytes())
        self._out = out

    async def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:
        if self._program is not None:
            import torch

            with torch.inference_mode():
                self._program(*self._inputs)
        return self._out

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)


async def main(port: int, program: Any = None) -> None:
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Null(program), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def _load(path: str) -> Any:
    import torch

    torch.set_num_threads(1)  # as the worker runs it in the benchmark
    program = torch.jit.load(path)  # type: ignore[no-untyped-call]
    program.eval()
    return program


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), _load(sys.argv[2]) if len(sys.argv) > 2 else None))
