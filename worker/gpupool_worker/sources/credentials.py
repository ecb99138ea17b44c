"""Credentials for a model source: only what the pool's referenced Secret provides.

The operator mounts the Secret named by ``source.credentialsSecretName`` read-only at
``GPUPOOL_SOURCE_CREDENTIALS`` (one file per key, as the kubelet writes Secret volumes). Nothing
else is consulted: no ``~/.aws``, no instance role, no cached Hugging Face login, no ambient
``AWS_*``/``HF_TOKEN`` variables, so a replica reads exactly the models its pool was granted.

| source | keys |
|---|---|
| hf:// | ``HF_TOKEN`` (``HF_ENDPOINT`` may also be given here) |
| s3:// | ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``; optional ``AWS_SESSION_TOKEN``, |
| | ``AWS_ENDPOINT_URL``, ``AWS_REGION`` |
| https:// | ``BEARER_TOKEN``, or ``username`` and ``password`` (HTTP basic) |
| oci:// | ``username`` and ``password``, or ``.dockerconfigjson`` (a kubernetes.io/dockerconfigjson Secret) |
| any | ``ca.crt``: a CA bundle for a server with a private certificate authority |
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gpupool_worker.sources.errors import Reason, SourceError

__all__ = ["Credentials"]


@dataclass(frozen=True, slots=True)
class Credentials:
    values: Mapping[str, str] = field(default_factory=dict)
    origin: str = "no credentials Secret"

    @classmethod
    def from_directory(cls, path: Path | None) -> Credentials:
        """The keys of a mounted Secret (files; the kubelet's ``..data`` links are skipped)."""
        if path is None:
            return cls()
        if not path.is_dir():
            raise SourceError(Reason.CREDENTIALS, f"the credentials Secret should be mounted at {path}, "
                              "but nothing is there")
        values = {p.name: p.read_text().strip() for p in sorted(path.iterdir())
                  if p.is_file() and not p.name.startswith("..")}
        return cls(values, f"the Secret mounted at {path}")

    def fingerprint(self) -> str:
        """A digest of every key and value ("" without a Secret): what the cache keys entries by."""
        if not self.values:
            return ""
        digest = hashlib.sha256()
        for key, value in sorted(self.values.items()):
            digest.update(f"{key}\0{value}\0".encode())
        return digest.hexdigest()

    def get(self, *keys: str) -> str | None:
        for key in keys:
            value = self.values.get(key)
            if value:
                return value
        return None

    def ca_bundle(self) -> str | None:
        """Path of the ``ca.crt`` key's file, for TLS clients that take a path."""
        if "ca.crt" not in self.values or not self.origin.startswith("the Secret mounted at "):
            return None
        return str(Path(self.origin.removeprefix("the Secret mounted at ")) / "ca.crt")

    def registry_login(self, registry: str) -> tuple[str, str] | None:
        """(username, password) for an OCI registry: plain keys, else ``.dockerconfigjson``."""
        user, password = self.get("username"), self.get("password")
        if user and password:
            return user, password
        raw = self.get(".dockerconfigjson")
        if not raw:
            return None
        try:
            auths = json.loads(raw).get("auths", {})
        except ValueError as exc:
            raise SourceError(Reason.CREDENTIALS, f".dockerconfigjson in {self.origin} is not JSON: {exc}") from None
        for host, entry in auths.items():
            if host.removeprefix("https://").removeprefix("http://").rstrip("/").split("/")[0] != registry:
                continue
            if entry.get("username") and entry.get("password"):
                return str(entry["username"]), str(entry["password"])
            if entry.get("auth"):
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                return user, password
        return None
