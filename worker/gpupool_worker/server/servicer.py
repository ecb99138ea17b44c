"""The GRPCInferenceService servicer: convert, call the data plane, convert back. Nothing else.

Engine errors map onto status codes one to one; any other exception in a request is logged
(rate-limited: :mod:`gpupool_worker.engine.logs`) and answered INTERNAL, and the worker keeps
serving. Requests arrive as bytes and are parsed here (:func:`add_to_server`), so a message that is
not valid protobuf is answered INVALID_ARGUMENT, saying so, instead of gRPC's UNKNOWN with a
traceback in the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from gpupool_proto import inference_pb2 as pb
from gpupool_proto import inference_pb2_grpc as pb_grpc
from gpupool_worker.engine.dataplane import EXTENSIONS, SERVER_NAME, DataPlane
from gpupool_worker.engine.errors import ErrorKind, InferenceError
from gpupool_worker.engine.logs import RateLimitedLog
from gpupool_worker.server import converters

__all__ = ["STATUS_OF", "InferenceServicer", "add_to_server"]

log = logging.getLogger(__name__)
errors = RateLimitedLog(log)

STATUS_OF: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.CANCELLED: grpc.StatusCode.CANCELLED,
    ErrorKind.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
}

Reply = TypeVar("Reply")

# ModelInfer requests larger than this are parsed and converted off the event loop
OFF_LOOP_BYTES = 1 << 20


async def _guard(context: grpc.aio.ServicerContext[Any, Any], what: str,
                 call: Callable[[], Awaitable[Reply]]) -> Reply:
    try:
        return await call()
    except InferenceError as err:
        await context.abort(STATUS_OF[err.kind], err.message)
    except grpc.aio.AbortError:
        raise
    except Exception as exc:
        errors.error(f"{what}:{type(exc).__name__}", "%s failed", what, exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, f"{what} failed: {type(exc).__name__}: {exc}")
    raise AssertionError("unreachable: context.abort raises")


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane

    async def ServerLive(self, request: pb.ServerLiveRequest,
                         context: grpc.aio.ServicerContext[Any, Any]) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._plane.live)

    async def ServerReady(self, request: pb.ServerReadyRequest,
                          context: grpc.aio.ServicerContext[Any, Any]) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._plane.ready)

    async def ModelReady(self, request: pb.ModelReadyRequest,
                         context: grpc.aio.ServicerContext[Any, Any]) -> pb.ModelReadyResponse:
        async def call() -> pb.ModelReadyResponse:
            if self._plane.repository.get(request.name) is None:
                raise InferenceError.not_found(f"unknown model '{request.name}'")
            return pb.ModelReadyResponse(ready=self._plane.model_ready(request.name, request.version))

        return await _guard(context, "ModelReady", call)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest,
                             context: grpc.aio.ServicerContext[Any, Any]) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=self._plane.version,
                                         extensions=EXTENSIONS)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest,
                            context: grpc.aio.ServicerContext[Any, Any]) -> pb.ModelMetadataResponse:
        async def call() -> pb.ModelMetadataResponse:
            return converters.metadata_to_pb(self._plane.model_metadata(request.name, request.version))

        return await _guard(context, "ModelMetadata", call)

    async def ModelInfer(self, request: pb.ModelInferRequest,
                         context: grpc.aio.ServicerContext[Any, Any]) -> pb.ModelInferResponse:
        return await self._model_infer(request, context, off_loop=False)

    async def model_infer_bytes(self, raw: bytes,
                                context: grpc.aio.ServicerContext[Any, Any]) -> pb.ModelInferResponse:
        """ModelInfer from the request's bytes: a large one (over ``OFF_LOOP_BYTES``) is parsed and
        converted on a thread, where splitting megabytes of BYTES elements gives the event loop
        (and every small request on it) turns, instead of holding it for tens of milliseconds."""
        off_loop = len(raw) > OFF_LOOP_BYTES
        try:
            request = (await asyncio.to_thread(pb.ModelInferRequest.FromString, raw) if off_loop
                       else pb.ModelInferRequest.FromString(raw))
        except Exception as exc:  # google.protobuf.message.DecodeError: nothing else parsing raises
            await _malformed(context, "ModelInfer", pb.ModelInferRequest.DESCRIPTOR.full_name, exc)
        return await self._model_infer(request, context, off_loop=off_loop)

    async def _model_infer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any],
                           *, off_loop: bool) -> pb.ModelInferResponse:
        # _guard's handling written out: the hottest call skips building a closure per request
        try:
            try:
                engine_request = (await asyncio.to_thread(converters.infer_request_from_pb, request) if off_loop
                                  else converters.infer_request_from_pb(request))
            except InferenceError as err:  # refused before the data plane saw it: count it there
                self._plane.count_failure(request.model_name, err.kind)
                raise
            response = await self._plane.infer(engine_request, timeout_s=context.time_remaining())
            return converters.infer_response_to_pb(response)
        except InferenceError as err:
            await context.abort(STATUS_OF[err.kind], err.message)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            errors.error(f"ModelInfer:{type(exc).__name__}", "ModelInfer failed", exc_info=exc)
            await context.abort(grpc.StatusCode.INTERNAL, f"ModelInfer failed: {type(exc).__name__}: {exc}")
        raise AssertionError("unreachable: context.abort raises")

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.ModelStatisticsResponse:
        async def call() -> pb.ModelStatisticsResponse:
            return converters.statistics_to_pb(self._plane.statistics(request.name, request.version))

        return await _guard(context, "ModelStatistics", call)

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.RepositoryIndexResponse:
        return converters.index_to_pb(self._plane.index(ready_only=request.ready))


def _parsing(method: Callable[[Any, Any], Awaitable[Any]], request_type: Any, name: str
             ) -> Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
    full_name = request_type.DESCRIPTOR.full_name

    async def handler(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            request = request_type.FromString(raw)
        except Exception as exc:  # google.protobuf.message.DecodeError: nothing else parsing raises
            await _malformed(context, name, full_name, exc)
        return await method(request, context)

    return handler


async def _malformed(context: grpc.aio.ServicerContext[Any, Any], name: str, full_name: str,
                     exc: Exception) -> NoReturn:
    errors.warning(f"{name}:malformed", "%s: a request that is not a valid %s (%s)", name, full_name, exc)
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f"{name}: the request is not a valid {full_name} message: {exc}")
    raise AssertionError("unreachable: context.abort raises")


def add_to_server(servicer: InferenceServicer, server: grpc.aio.Server) -> None:
    """Register the service as ``add_GRPCInferenceServiceServicer_to_server`` does, except that
    each handler receives the request's bytes and parses them itself (see the module docstring)."""
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    handlers = {}
    for method in service.methods:
        request_type = getattr(pb, method.input_type.name)
        response_type = getattr(pb, method.output_type.name)
        parse = (servicer.model_infer_bytes if method.name == "ModelInfer"
                 else _parsing(getattr(servicer, method.name), request_type, method.name))
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            parse,
            request_deserializer=None, response_serializer=response_type.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
