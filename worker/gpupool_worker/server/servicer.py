"""The GRPCInferenceService servicer: convert, call the data plane, convert back. Nothing else.

Engine errors map onto status codes one to one; any other exception in a request is logged and
answered INTERNAL, and the worker keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from gpupool_proto import inference_pb2 as pb
from gpupool_proto import inference_pb2_grpc as pb_grpc
from gpupool_worker.engine.dataplane import EXTENSIONS, SERVER_NAME, DataPlane
from gpupool_worker.engine.errors import ErrorKind, InferenceError
from gpupool_worker.server import converters

__all__ = ["STATUS_OF", "InferenceServicer"]

log = logging.getLogger(__name__)

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


async def _guard(context: grpc.aio.ServicerContext[Any, Any], what: str,
                 call: Callable[[], Awaitable[Reply]]) -> Reply:
    try:
        return await call()
    except InferenceError as err:
        await context.abort(STATUS_OF[err.kind], err.message)
    except grpc.aio.AbortError:
        raise
    except Exception as exc:
        log.exception("%s failed", what)
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
        # _guard's handling written out: the hottest call skips building a closure per request
        try:
            engine_request = converters.infer_request_from_pb(request)
            response = await self._plane.infer(engine_request, timeout_s=context.time_remaining())
            return converters.infer_response_to_pb(response)
        except InferenceError as err:
            await context.abort(STATUS_OF[err.kind], err.message)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            log.exception("ModelInfer failed")
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
