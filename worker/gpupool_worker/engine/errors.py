"""Errors the engine raises, each with a kind that the transport maps onto its own status codes.

The engine never imports gRPC: a servicer translates :class:`ErrorKind` into ``grpc.StatusCode``
(and an HTTP front end could translate it into 400/404/503). Messages name the offending model,
tensor or setting so a client can fix its request without reading server logs.
"""

from __future__ import annotations

import enum

__all__ = ["ErrorKind", "InferenceError"]


class ErrorKind(enum.Enum):
    """What went wrong, in the vocabulary of canonical RPC status codes."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    CANCELLED = "cancelled"
    FAILED_PRECONDITION = "failed_precondition"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    INTERNAL = "internal"


class InferenceError(Exception):
    """A request the engine refuses or could not complete; ``str(err)`` is the client-facing text."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    @classmethod
    def invalid(cls, message: str) -> InferenceError:
        return cls(ErrorKind.INVALID_ARGUMENT, message)

    @classmethod
    def not_found(cls, message: str) -> InferenceError:
        return cls(ErrorKind.NOT_FOUND, message)

    @classmethod
    def unavailable(cls, message: str) -> InferenceError:
        return cls(ErrorKind.UNAVAILABLE, message)

    def __repr__(self) -> str:
        return f"InferenceError({self.kind.name}, {self.message!r})"
