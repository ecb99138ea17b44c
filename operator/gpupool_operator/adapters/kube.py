"""The one door to the Kubernetes API: raw JSON requests, counted, retried on conflicts.

Why not the typed client models: deserializing a thousand Node objects into generated classes costs
seconds; the operator reads and writes plain dicts (the pydantic API models validate what matters).
Every request goes through :meth:`Kube.request`, so tests and the benchmark can count requests per
reconcile and a test can swap the transport. Blocking calls run in a bounded thread pool
(:meth:`Kube.run`) so kopf's event loop never waits on the network.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from gpupool_operator.adapters import metrics
from gpupool_operator.adapters.names import FIELD_MANAGER

__all__ = ["Kube", "KubeError", "NotLeader", "connection_settings", "load_client"]

T = TypeVar("T")
Obj = dict[str, Any]


class KubeError(RuntimeError):
    """A request the API server refused; ``status`` is the HTTP status (0 when it never answered),
    ``reason`` the Status object's CamelCase reason (``Forbidden``, ``AlreadyExists``, ``Invalid``)."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.reason = reason


class NotLeader(KubeError):
    """A write attempted while this replica may not write (it lost, or could not renew, the Lease)."""

    def __init__(self, method: str, path: str) -> None:
        super().__init__(0, f"{method} {path} refused: this operator replica is not the leader", "NotLeader")


def load_client(kubeconfig: Path | None = None, pool_size: int = 32) -> Any:
    """A ``kubernetes.client.ApiClient`` from a kubeconfig, or from the pod's ServiceAccount."""
    from kubernetes import client, config

    configuration = client.Configuration()
    if kubeconfig is not None:
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


def connection_settings(api_client: Any) -> dict[str, Any]:
    """How ``api_client`` reaches the server, as keyword arguments for ``kopf.ConnectionInfo``.

    kopf logs in with these instead of re-reading the kubeconfig itself, so the operator and its
    watches always use the same credentials (a kubeconfig path given at run time, a ServiceAccount
    token, client certificates).
    """
    cfg = api_client.configuration
    token = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
    if token and token.lower().startswith("bearer "):
        token = token[7:]
    return {
        "server": cfg.host,
        "ca_path": cfg.ssl_ca_cert,
        "insecure": not cfg.verify_ssl,
        "certificate_path": cfg.cert_file,
        "private_key_path": cfg.key_file,
        "token": token or None,
    }


class Kube:
    """Counted, JSON-in/JSON-out access to the API server through a ``kubernetes`` ApiClient."""

    def __init__(self, api_client: Any, workers: int = 16, fence: Callable[[], bool] | None = None) -> None:
        self.api_client = api_client
        self.requests: Counter[str] = Counter()
        self.fenced = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gpupool-kube")
        self._observers: list[Callable[[str, str], None]] = []
        self.fence = fence
        """Writes (anything but GET) are sent only while ``fence()`` is true: a leader that lost its
        Lease, or cannot renew it in time, stops every write at once (:class:`NotLeader`)."""

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def observe(self, callback: Callable[[str, str], None]) -> None:
        """Call ``callback(method, path)`` on every request (metrics)."""
        self._observers.append(callback)

    @property
    def total_requests(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Run a blocking call in the adapter's thread pool."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    # -- the one request primitive ----------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        if method != "GET" and self.fence is not None and not self.fence():
            with self._lock:
                self.fenced += 1
            metrics.FENCED_WRITES.inc()
            raise NotLeader(method, path)
        with self._lock:
            self.requests[method] += 1
        for callback in self._observers:
            callback(method, path)
        if method in ("POST", "PUT", "PATCH") and not (query and "fieldManager" in query):
            query = {**(query or {}), "fieldManager": FIELD_MANAGER}  # managedFields name the operator
        return self.send(method, path, body, query, content_type)

    def send(self, method: str, path: str, body: Any, query: Mapping[str, str] | None, content_type: str) -> Obj:
        """The transport (tests swap it: ``tests/operator/fake_api.py``)."""
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            method_, url, headers, body_, post = self.api_client.param_serialize(
                method, path, query_params=list(query.items()) if query else None, header_params=headers,
                body=body, auth_settings=["BearerToken"],
            )
            response = self.api_client.call_api(method_, url, header_params=headers, body=body_, post_params=post,
                                                _request_timeout=(10, 60))
            data = response.read()
        except ApiException as err:
            raise _error(int(err.status or 0), err.body, str(err.reason or err)) from None
        except OSError as err:  # connection refused/reset, TLS failure, timeout
            raise KubeError(0, str(err), "Unreachable") from None
        if not 200 <= int(response.status) < 300:
            raise _error(int(response.status), data, str(response.reason))
        return json.loads(data) if data else {}

    # -- verbs ------------------------------------------------------------------------------
    def get(self, path: str) -> Obj | None:
        try:
            return self.request("GET", path)
        except KubeError as err:
            if err.status == 404:
                return None
            raise

    def list(self, path: str, label_selector: str | None = None) -> tuple[builtins.list[Obj], str | None]:
        """Every item under ``path`` (paginated), and the list's resourceVersion."""
        items: builtins.list[Obj] = []
        query: dict[str, str] = {"limit": "500"}
        if label_selector:
            query["labelSelector"] = label_selector
        version: str | None = None
        while True:
            page = self.request("GET", path, query=query)
            items += page.get("items", [])
            meta = page.get("metadata", {})
            version = meta.get("resourceVersion", version)
            token = meta.get("continue")
            if not token:
                return items, version
            query["continue"] = token

    def create(self, path: str, body: Obj) -> Obj | None:
        """Create; ``None`` when an object of that name already exists (409 AlreadyExists)."""
        try:
            return self.request("POST", path, body)
        except KubeError as err:
            if err.status == 409:
                return None
            raise

    def delete(self, path: str, uid: str | None = None, grace_seconds: int | None = None) -> bool:
        """Delete; ``False`` when it was already gone. ``uid`` guards against a same-named successor."""
        body: Obj = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if uid is not None:
            body["preconditions"] = {"uid": uid}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        try:
            self.request("DELETE", path, body)
        except KubeError as err:
            if err.status in (404, 409):
                return False
            raise
        return True

    def merge_patch(self, path: str, body: Obj) -> Obj:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def json_patch(self, path: str, ops: builtins.list[Obj]) -> Obj:
        return self.request("PATCH", path, ops, content_type="application/json-patch+json")

    def apply(self, path: str, body: Obj, force: bool = True) -> Obj:
        """Server-side apply of ``body`` as the operator's field manager."""
        query = {"fieldManager": FIELD_MANAGER, "force": "true" if force else "false"}
        return self.request("PATCH", path, body, query=query, content_type="application/apply-patch+yaml")


def _error(status: int, body: Any, fallback: str) -> KubeError:
    """A KubeError with the message and reason of the API server's Status body, when it sent one."""
    message, reason = fallback, ""
    with contextlib.suppress(TypeError, ValueError, AttributeError):
        doc = json.loads(body or b"{}")
        message, reason = str(doc.get("message") or message), str(doc.get("reason") or "")
    return KubeError(status, message, reason)


def path_for(api_version: str, plural: str, name: str | None = None, namespace: str | None = None,
             subresource: str | None = None) -> str:
    """The REST path of a collection or object (``/api/v1/...`` or ``/apis/<group>/<version>/...``)."""
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace is not None:
        base += f"/namespaces/{quote(namespace)}"
    base += f"/{plural}"
    if name is not None:
        base += f"/{quote(name)}"
    if subresource is not None:
        base += f"/{subresource}"
    return base
