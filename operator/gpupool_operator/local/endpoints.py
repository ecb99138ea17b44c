"""Reach a pool's workers on the local cluster: its Services' ready endpoints, from EndpointSlices.

No kube-proxy runs locally (and IPVS is absent on these machines), so a Service's ClusterIP routes
nowhere; the EndpointSlice controller still lists the ready pod IPs, and on real kubelet nodes
those are reachable from the host on the node's bridge. This helper is what clients use instead of
the ClusterIP: ``endpoints(api, "default", "quickstart")`` gives ``host:port`` of every ready gRPC
endpoint of the pool (all its models, or one), KWOK pods left out (nothing answers there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpupool_operator.adapters import names

KWOK_ANNOTATION = "kwok.x-k8s.io/node"


@dataclass(frozen=True, slots=True)
class Endpoint:
    model: str
    ip: str
    port: int
    node: str
    pod: str

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"


def endpoints(api_client: Any, namespace: str, pool: str, model: str | None = None,
              port_name: str = "grpc") -> list[Endpoint]:
    """Ready endpoints of the pool's Services (every model, or ``model``), on real nodes only."""
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    discovery = client.DiscoveryV1Api(api_client)
    selector = f"{names.LABEL_POOL}={names.label_value(pool)}"
    if model:
        selector += f",{names.LABEL_MODEL}={model}"
    plain = api_client.sanitize_for_serialization
    fake = {n["metadata"]["name"] for n in plain(core.list_node())["items"]
            if KWOK_ANNOTATION in (n["metadata"].get("annotations") or {})}
    out: list[Endpoint] = []
    for svc in plain(core.list_namespaced_service(namespace, label_selector=selector))["items"]:
        svc_model = (svc["metadata"].get("labels") or {}).get(names.LABEL_MODEL, "")
        slices = plain(discovery.list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={svc['metadata']['name']}"))
        for sl in slices["items"]:
            port = next((p["port"] for p in sl.get("ports") or [] if p.get("name") == port_name), None)
            if port is None:
                continue
            for ep in sl.get("endpoints") or []:
                node = ep.get("nodeName") or ""
                if not (ep.get("conditions") or {}).get("ready") or node in fake:
                    continue
                pod = (ep.get("targetRef") or {}).get("name", "")
                out += [Endpoint(svc_model, ip, int(port), node, pod) for ip in ep.get("addresses") or []]
    return sorted(out, key=lambda e: (e.model, e.pod))


def wait_for(api_client: Any, namespace: str, pool: str, count: int, timeout_s: float = 120,
             model: str | None = None) -> list[Endpoint]:
    """Until the pool has at least ``count`` ready real endpoints (bounded)."""
    import time

    deadline = time.monotonic() + timeout_s
    found: list[Endpoint] = []
    while time.monotonic() < deadline:
        found = endpoints(api_client, namespace, pool, model)
        if len(found) >= count:
            return found
        time.sleep(0.5)
    raise TimeoutError(f"pool {namespace}/{pool}: {len(found)} of {count} endpoints ready after {timeout_s:.0f}s")


def request_inputs(meta: dict[str, Any], text: bytes = b"what does one inference cost?", rows: int = 1) -> list[Any]:
    """tritonclient inputs for one request, built from a model's own KServe v2 metadata
    (``get_model_metadata(..., as_json=True)``): ``text`` for BYTES inputs, zeros otherwise;
    ``rows`` rows in a variable first (batch) dimension, 1 in any other variable one."""
    import numpy as np
    import tritonclient.grpc as triton

    inputs = []
    for spec in meta.get("inputs", []):
        shape = [(rows if i == 0 else 1) if int(d) < 0 else int(d) for i, d in enumerate(spec["shape"])] or [1]
        tensor = triton.InferInput(spec["name"], shape, spec["datatype"])
        if spec["datatype"] == "BYTES":
            data = np.full(shape, text, dtype=object)
        else:
            data = np.zeros(shape, dtype=triton.triton_to_np_dtype(spec["datatype"]))
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    return inputs


def send(address: str, model: str, requests: int = 20, timeout_s: float = 30) -> list[float]:
    """Send ``requests`` KServe v2 requests to one endpoint, inputs built from the model's own
    metadata (text for BYTES, zeros otherwise, batch 1); returns each request's seconds.

    Uses tritonclient (a development dependency): the demo's and the tests' load, not the product's.
    """
    import time

    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(address)
    try:
        inputs = request_inputs(client.get_model_metadata(model, as_json=True))
        took: list[float] = []
        for _ in range(requests):
            t0 = time.perf_counter()
            client.infer(model, inputs, client_timeout=timeout_s)
            took.append(time.perf_counter() - t0)
        return took
    finally:
        client.close()
