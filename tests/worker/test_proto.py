"""The checked-in stubs match the .proto, and the .proto matches Triton's wire shape.

Drift: regenerate with grpc_tools into a temp dir and compare byte for byte (the fix is the command
in the failure message). Contract: every message we share with Triton's grpc_service.proto (as
tritonclient ships it) has the same field numbers, types and labels, so any Triton/KServe client
decodes our replies; RPC names and types match too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from .proto_util import PROTO_FILE, PROTO_ROOT, compile_descriptor_set

GENERATED = ("inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py")
REGENERATE = (
    f"{sys.executable} -m grpc_tools.protoc -Iproto --python_out=proto --pyi_out=proto "
    f"--grpc_python_out=proto {PROTO_FILE}"
)


def test_checked_in_stubs_match_the_proto(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    out.mkdir()
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_ROOT}", f"--python_out={out}",
         f"--pyi_out={out}", f"--grpc_python_out={out}", PROTO_FILE],
        check=True, capture_output=True)
    for name in GENERATED:
        fresh = (out / "gpupool_proto" / name).read_text()
        checked_in = (PROTO_ROOT / "gpupool_proto" / name).read_text()
        assert fresh == checked_in, f"{name} is stale; regenerate from the repo root with: {REGENERATE}"


def _messages(file: descriptor_pb2.FileDescriptorProto) -> dict[str, descriptor_pb2.DescriptorProto]:
    out: dict[str, descriptor_pb2.DescriptorProto] = {}

    def walk(prefix: str, msgs: list[descriptor_pb2.DescriptorProto]) -> None:
        for m in msgs:
            full = f"{prefix}.{m.name}"
            out[full] = m
            walk(full, list(m.nested_type))

    walk(file.package, list(file.message_type))
    return out


@pytest.fixture(scope="module")
def ours() -> descriptor_pb2.FileDescriptorProto:
    (file,) = [f for f in compile_descriptor_set().file if f.name == PROTO_FILE]
    return file


@pytest.fixture(scope="module")
def triton() -> descriptor_pb2.FileDescriptorProto:
    from tritonclient.grpc import service_pb2

    proto = descriptor_pb2.FileDescriptorProto()
    service_pb2.DESCRIPTOR.CopyToProto(proto)
    return proto


def test_package_and_service_names_are_the_protocols(ours: descriptor_pb2.FileDescriptorProto) -> None:
    assert ours.package == "inference"
    assert [s.name for s in ours.service] == ["GRPCInferenceService"]
    assert {m.name for m in ours.service[0].method} == {
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
        "ModelStatistics", "RepositoryIndex"}


def test_every_rpc_has_tritons_request_and_response_types(
    ours: descriptor_pb2.FileDescriptorProto, triton: descriptor_pb2.FileDescriptorProto,
) -> None:
    theirs = {m.name: m for m in triton.service[0].method}
    for method in ours.service[0].method:
        assert method.name in theirs
        assert (method.input_type, method.output_type) == (
            theirs[method.name].input_type, theirs[method.name].output_type)
        assert not method.client_streaming
        assert not method.server_streaming


def test_every_shared_message_is_wire_compatible_with_triton(
    ours: descriptor_pb2.FileDescriptorProto, triton: descriptor_pb2.FileDescriptorProto,
) -> None:
    mine, theirs = _messages(ours), _messages(triton)
    shared = sorted(set(mine) & set(theirs))
    assert len(shared) >= 30
    for name in shared:
        their_fields = {f.number: f for f in theirs[name].field}
        for field in mine[name].field:
            if field.number >= 100:  # gpupool extensions live at 100+
                continue
            assert field.number in their_fields, f"{name}.{field.name} #{field.number} not in Triton"
            other = their_fields[field.number]
            assert (field.name, field.type, field.label, field.type_name) == (
                other.name, other.type, other.label, other.type_name), f"{name}.{field.name}"
    only_ours = set(mine) - set(theirs)
    assert only_ours == {"inference.CostStatistics"}
