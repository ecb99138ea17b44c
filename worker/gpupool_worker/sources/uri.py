"""Model source URIs, parsed: a purely computational module (no I/O).

| form | meaning |
|---|---|
| ``hf://org/name[@revision]`` | a Hugging Face Hub repository (or a mirror at ``HF_ENDPOINT``) |
| ``s3://bucket/prefix`` | every object under the prefix, or the one object with that key |
| ``https://host/path`` | one file, or an archive (``.tar``, ``.tar.gz``/``.tgz``, ``.zip``) unpacked |
| ``oci://registry/repository[:tag or @sha256:digest]`` | an OCI artifact (ORAS layout: one layer per file) |
| ``pvc://claim/path`` | a path on a PersistentVolumeClaim the pod mounts read-only |
| ``builtin://name`` | a model shipped inside the worker (``all-minilm-l6-v2``) |
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from gpupool_worker.sources.errors import Reason, SourceError

__all__ = ["SCHEMES", "SourceURI", "parse_uri"]

SCHEMES = ("hf", "s3", "https", "oci", "pvc", "builtin")
_HINTS = {
    "gs": "gs:// is not supported; Cloud Storage speaks the S3 protocol: use s3://bucket/prefix with "
          "AWS_ENDPOINT_URL=https://storage.googleapis.com and HMAC keys in the credentials Secret",
    "http": "plain http:// is refused (weights would travel unauthenticated); use https://",
    "file": "file:// is not a model source; put the files on a PersistentVolumeClaim and use pvc://claim/path",
}
_HF_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_HF_REPO = re.compile(rf"^({_HF_PART})/({_HF_PART})(?:@([A-Za-z0-9._/-]+))?$")
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_OCI_REF = re.compile(
    r"^(?P<registry>[A-Za-z0-9.-]+(?::[0-9]+)?)/(?P<repository>[a-z0-9]+(?:[._/-][a-z0-9]+)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class SourceURI:
    """A parsed source. ``location`` is scheme-specific: repo id, bucket, URL, registry, claim or name;
    ``path`` is the key prefix, OCI repository, or path on the claim; ``revision`` the pinned hf
    revision or OCI tag/digest."""

    raw: str
    scheme: str
    location: str
    path: str = ""
    revision: str = ""

    @property
    def display(self) -> str:
        return self.raw


def _bad(uri: str, why: str) -> SourceError:
    return SourceError(Reason.INVALID_URI, f"source uri {uri!r}: {why}")


def parse_uri(uri: str, revision: str = "") -> SourceURI:
    """Parse ``uri``; ``revision`` is the pool's ``source.revision`` (hf:// revision, OCI tag).

    Raises SourceError(UNKNOWN_SCHEME) for a scheme this worker cannot fetch (with what to use
    instead) and SourceError(INVALID_URI) for a malformed one, naming the part that is wrong.
    """
    text = uri.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise _bad(uri, "expected scheme://..., e.g. hf://org/name or s3://bucket/prefix")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        hint = _HINTS.get(scheme, f"known schemes: {', '.join(s + '://' for s in SCHEMES)}")
        raise SourceError(Reason.UNKNOWN_SCHEME, f"source uri {uri!r}: unknown scheme {scheme}://; {hint}")
    if not rest:
        raise _bad(uri, "nothing after the scheme")
    return _PARSERS[scheme](text, rest, revision)


def _hf(uri: str, rest: str, revision: str) -> SourceURI:
    match = _HF_REPO.match(rest.rstrip("/"))
    if not match:
        raise _bad(uri, "expected hf://org/name or hf://org/name@revision")
    org, name, inline = match.groups()
    if inline and revision and inline != revision:
        raise _bad(uri, f"revision @{inline} in the uri disagrees with source.revision {revision!r}")
    return SourceURI(uri, "hf", f"{org}/{name}", revision=inline or revision or "main")


def _s3(uri: str, rest: str, revision: str) -> SourceURI:
    bucket, _, key = rest.partition("/")
    if not _S3_BUCKET.match(bucket):
        raise _bad(uri, f"bucket {bucket!r} is not a valid S3 bucket name")
    return SourceURI(uri, "s3", bucket, key)


def _https(uri: str, rest: str, revision: str) -> SourceURI:
    parts = urlsplit(uri)
    if not parts.hostname:
        raise _bad(uri, "no host")
    if not parts.path.strip("/"):
        raise _bad(uri, "no file path after the host")
    return SourceURI(uri, "https", uri.split("#", 1)[0])


def _oci(uri: str, rest: str, revision: str) -> SourceURI:
    match = _OCI_REF.match(rest)
    if not match:
        raise _bad(uri, "expected oci://registry/repository:tag or oci://registry/repository@sha256:<digest>")
    tag, digest = match["tag"], match["digest"]
    ref = digest or tag or revision or "latest"
    if revision and (tag or digest) and revision not in (tag, digest):
        raise _bad(uri, f"reference {tag or digest!r} in the uri disagrees with source.revision {revision!r}")
    return SourceURI(uri, "oci", match["registry"], match["repository"], ref)


def _pvc(uri: str, rest: str, revision: str) -> SourceURI:
    claim, _, path = rest.partition("/")
    if not _K8S_NAME.match(claim):
        raise _bad(uri, f"claim {claim!r} is not a valid PersistentVolumeClaim name")
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise _bad(uri, "the path on the claim may not contain . or ..")
    return SourceURI(uri, "pvc", claim, "/".join(parts))


def _builtin(uri: str, rest: str, revision: str) -> SourceURI:
    return SourceURI(uri, "builtin", rest.strip("/"))


_PARSERS = {"hf": _hf, "s3": _s3, "https": _https, "oci": _oci, "pvc": _pvc, "builtin": _builtin}
