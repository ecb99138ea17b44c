"""Why a model is not being served: one machine-readable reason plus a sentence for people.

The reasons cover fetching and loading alike, because the operator and the user ask one question
("why is this replica not ready?") whatever stage failed. The worker reports the reason on
RepositoryIndex, on ModelReady/ModelMetadata errors and as the ``reason`` label of
``gpupool_worker_model_state``; the operator turns it into the pool's ModelLoadFailed condition.
"""

from __future__ import annotations

import enum

__all__ = ["Reason", "SourceError"]


class Reason(enum.StrEnum):
    """What went wrong, in words the operator's condition reasons use (UpperCamelCase)."""

    INVALID_SETTING = "InvalidSetting"
    UNKNOWN_SCHEME = "UnknownScheme"
    INVALID_URI = "InvalidURI"
    CREDENTIALS = "CredentialsRejected"
    NOT_FOUND = "ModelNotFound"
    CHECKSUM_MISMATCH = "ChecksumMismatch"
    OFFLINE = "OfflineNotCached"
    FETCH_FAILED = "FetchFailed"
    FORMAT_MISMATCH = "FormatMismatch"
    PRECISION_UNSUPPORTED = "PrecisionUnsupported"
    ENGINE_UNSUPPORTED = "EngineUnsupported"
    WEIGHTS_TOO_LARGE = "WeightsTooLarge"
    LOAD_FAILED = "LoadFailed"


class SourceError(Exception):
    """A model that cannot be fetched or loaded, with the reason and a message naming the source."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.message}"
