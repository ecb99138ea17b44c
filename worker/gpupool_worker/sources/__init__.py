"""Model sources: hf://, s3://, https://, oci://, pvc:// and builtin://, fetched once per node into a
cache before the worker reports ready. Imports nothing from the engine or the transport."""

from gpupool_worker.sources.errors import Reason, SourceError
from gpupool_worker.sources.fetch import Fetched, FetchRequest, fetch
from gpupool_worker.sources.uri import SourceURI, parse_uri

__all__ = ["FetchRequest", "Fetched", "Reason", "SourceError", "SourceURI", "fetch", "parse_uri"]
