"""Our proto's message classes built in a *private* descriptor pool.

The test process also imports tritonclient, whose messages share the ``inference`` package; a
private pool (compiled from the .proto with grpc_tools at test time) avoids the clash.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"
PROTO_FILE = "gpupool_proto/inference.proto"


def compile_descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        rc = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"--descriptor_set_out={out}", PROTO_FILE])
        assert rc == 0, "protoc failed"
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


@functools.cache
def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for file_proto in compile_descriptor_set().file:
        pool.Add(file_proto)
    return pool


def own_message(name: str) -> Any:
    return message_factory.GetMessageClass(_pool().FindMessageTypeByName(f"inference.{name}"))
