"""s3:// sources with boto3: every object under a prefix (or the one object with that key).

Keys come from the credentials Secret (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, and it
must hold both); without a Secret requests are unsigned (public buckets), never signed with
whatever identity the node happens to have. Endpoint and region (``AWS_ENDPOINT_URL``,
``AWS_REGION``) come from the Secret, else from the pod's environment. Each object is
checked against its listed size and, for single-part uploads (an ETag that is the MD5), its MD5.
Downloads resume with ``Range`` after a dropped connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from gpupool_worker.sources.base import Fetcher, Listing, RemoteFile
from gpupool_worker.sources.cache import Manifest
from gpupool_worker.sources.download import Progress, download
from gpupool_worker.sources.errors import Reason, SourceError

__all__ = ["S3Fetcher"]

CHUNK = 1 << 20
_MD5_ETAG = re.compile(r'^"?([0-9a-f]{32})"?$')
_CREDENTIAL_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                     "InvalidToken", "AllAccessDisabled", "403", "401"}
_MISSING_CODES = {"NoSuchBucket", "NoSuchKey", "404"}


class S3Fetcher(Fetcher):
    _client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3  # type: ignore[import-untyped, unused-ignore]
            from botocore import UNSIGNED  # type: ignore[import-untyped, unused-ignore]
            from botocore.config import Config  # type: ignore[import-untyped, unused-ignore]

            c = self.credentials
            key, secret = c.get("AWS_ACCESS_KEY_ID"), c.get("AWS_SECRET_ACCESS_KEY")
            if c.values and not (key and secret):  # a Secret was referenced, but not with S3 keys
                raise SourceError(Reason.CREDENTIALS, f"{self.uri.display}: {c.origin} has no AWS_ACCESS_KEY_ID "
                                  f"and AWS_SECRET_ACCESS_KEY (its keys: {', '.join(sorted(c.values))})")
            config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=60,
                            **({} if key and secret else {"signature_version": UNSIGNED}))
            region = c.get("AWS_REGION", "AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
            session = boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret,
                                            aws_session_token=c.get("AWS_SESSION_TOKEN"), region_name=region)
            endpoint = c.get("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3") \
                or os.environ.get("AWS_ENDPOINT_URL")  # where, not who: may come from the pod's env
            self._client = session.client("s3", endpoint_url=endpoint,
                                          config=config, verify=c.ca_bundle() or True)
        return self._client

    def _error(self, exc: Exception, doing: str) -> SourceError:
        from botocore.exceptions import ClientError, NoCredentialsError  # type: ignore[import-untyped, unused-ignore]

        what = f"{self.uri.display}: {doing}"
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            message = exc.response.get("Error", {}).get("Message", "") or str(exc)
            if code in _CREDENTIAL_CODES:
                who = ("anonymous (no credentials Secret)" if not self.credentials.get("AWS_ACCESS_KEY_ID")
                       else f"the keys in {self.credentials.origin}")
                return SourceError(Reason.CREDENTIALS, f"{what}: {code}: {message}; signed as {who}")
            if code in _MISSING_CODES:
                return SourceError(Reason.NOT_FOUND, f"{what}: {code}: {message}")
            return SourceError(Reason.FETCH_FAILED, f"{what}: {code}: {message}")
        if isinstance(exc, NoCredentialsError):
            return SourceError(Reason.CREDENTIALS, f"{what}: {exc}")
        return SourceError(Reason.FETCH_FAILED, f"{what}: {type(exc).__name__}: {exc}")

    def listing(self) -> Listing:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, prefix = self.uri.location, self.uri.path
        files: list[RemoteFile] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    key = str(obj["Key"])
                    if key.endswith("/"):
                        continue
                    if key == prefix:  # the prefix names one object
                        rel = PurePosixPath(key).name
                    elif prefix and not prefix.endswith("/") and not key.startswith(prefix + "/"):
                        continue  # s3://b/model must not pick up s3://b/model-old/...
                    else:
                        rel = key[len(prefix):].lstrip("/")
                    files.append(RemoteFile(rel, int(obj["Size"]), None, f"{key}\n{obj.get('ETag', '')}"))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "listing the bucket") from None
        if not files:
            raise SourceError(Reason.NOT_FOUND, f"{self.uri.display}: no objects under s3://{bucket}/{prefix}")
        exact = [f for f in files if f.handle.split("\n")[0] == prefix]
        return Listing("", exact or files)

    def _opener(self, key: str) -> Any:
        from botocore.exceptions import ClientError

        @contextlib.contextmanager
        def open_at(offset: int) -> Iterator[tuple[int, Iterable[bytes]]]:
            args: dict[str, Any] = {"Bucket": self.uri.location, "Key": key}
            if offset:
                args["Range"] = f"bytes={offset}-"
            try:
                rsp = self.client.get_object(**args)
            except ClientError as exc:
                raise self._error(exc, f"reading {key}") from None
            body = rsp["Body"]
            start = offset if "ContentRange" in rsp else 0

            def chunks() -> Iterator[bytes]:
                try:
                    while block := body.read(CHUNK):
                        yield block
                except Exception as exc:  # botocore/urllib3 read errors: retried like a dropped socket
                    raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc

            try:
                yield start, chunks()
            finally:
                body.close()

        return open_at

    def download(self, listing: Listing, staged: Path, progress: Progress) -> Manifest:
        from botocore.exceptions import BotoCoreError

        digests: dict[str, str] = {}
        for remote in listing.files:
            key, _, etag = remote.handle.partition("\n")
            target = staged / remote.path
            try:
                digests[remote.path] = download(target, self._opener(key), size=remote.size, sha256=None,
                                                what=f"{self.uri.display} ({remote.path})", progress=progress,
                                                policy=self.policy)
            except BotoCoreError as exc:
                raise self._error(exc, f"reading {key}") from None
            md5 = _MD5_ETAG.match(etag)
            if md5 and _md5(target) != md5.group(1):
                target.unlink()
                raise SourceError(Reason.CHECKSUM_MISMATCH,
                                  f"{self.uri.display}: {remote.path} does not match its ETag (MD5) {md5.group(1)}")
        return Manifest(self.uri.raw, "", {f.path: int(f.size or 0) for f in listing.files}, digests)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
