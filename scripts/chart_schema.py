"""Generate charts/gpupool/values.schema.json (Helm checks values against it before rendering).

Usage, from the repository root (``make verify`` runs ``--check``)::

    python scripts/chart_schema.py           # write the schema
    python scripts/chart_schema.py --check   # exit 1 when the checked-in file differs

The ``config`` section (the GPUPoolConfig the chart makes) comes from the pydantic model through
the same structural schema the CRD uses (``gpupool_operator.api.crdgen``), so a price string,
enum or bound the API server refuses is refused by ``helm install`` first, with the field named.
Kubernetes-only keywords (``x-kubernetes-*``: CEL rules, list types) are dropped; the API server
still checks those when Helm applies the object. The rest of the values are described here, every
object closed (``additionalProperties: false``), so a misspelt key fails too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from gpupool_operator.api.config import GPU_POOL_CONFIG_CRD, GPUPoolConfig  # noqa: E402
from gpupool_operator.api.crdgen import structural_schema  # noqa: E402
from gpupool_operator.core.scaling.params import PolicyParams  # noqa: E402

SCHEMA_PATH = ROOT / "charts" / "gpupool" / "values.schema.json"

IP = r"^(podIP|[0-9]{1,3}(\.[0-9]{1,3}){3}|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*)$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"


def _s(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _i(description: str, minimum: int, maximum: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "integer", "description": description, "minimum": minimum}
    if maximum is not None:
        out["maximum"] = maximum
    return out


def _b(description: str) -> dict[str, Any]:
    return {"type": "boolean", "description": description}


def _obj(description: str, properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "description": description, "properties": properties,
                           "additionalProperties": False}
    if required:
        out["required"] = list(required)
    return out


def _free(description: str) -> dict[str, Any]:
    """A Kubernetes object passed through as written (affinity, resources, securityContext)."""
    return {"type": "object", "description": description}


def _strings(description: str) -> dict[str, Any]:
    return {"type": "object", "description": description, "additionalProperties": {"type": "string"}}


def _listener(what: str, port: int) -> dict[str, Any]:
    return _obj(f"Where the {what} listener binds.", {
        "bindAddress": _s("An IP address (0.0.0.0 or :: = every interface of the pod) or podIP (the pod's own "
                          "address only). The kubelet probes the pod IP: 127.0.0.1 would fail every probe.",
                          pattern=IP),
        "port": _i(f"Container port (default {port}).", 1, 65535),
    }, ("bindAddress", "port"))


def _monitor(kind: str) -> dict[str, Any]:
    return _obj(f"A Prometheus Operator {kind} for the operator's /metrics (needs monitoring.coreos.com/v1).", {
        "enabled": _b(f"Render the {kind}."),
        "interval": _s("Scrape interval, e.g. 30s.", pattern=DURATION),
        "scrapeTimeout": _s("Scrape timeout, e.g. 10s.", pattern=DURATION),
        "labels": _strings(f"Extra labels on the {kind} (what your Prometheus selects on)."),
    })


def _drop_kubernetes_keywords(node: Any) -> Any:
    """The structural schema as plain JSON Schema: no ``x-kubernetes-*``, objects closed."""
    if isinstance(node, list):
        return [_drop_kubernetes_keywords(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _drop_kubernetes_keywords(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def config_schema() -> dict[str, Any]:
    spec = structural_schema(GPUPoolConfig, GPU_POOL_CONFIG_CRD)["properties"]["spec"]
    schema = _drop_kubernetes_keywords(spec)
    schema["description"] = ("The cluster-wide GPUPoolConfig named default (prices, MIG policy, pool defaults); "
                             "the same fields as its spec (kubectl explain gpcfg.spec).")
    schema["properties"] = {"create": _b("Make the GPUPoolConfig (one applied by hand is left alone)."),
                            **schema["properties"]}
    schema.pop("required", None)
    return dict(schema)


def _seconds(description: str) -> dict[str, Any]:
    return {"type": "number", "description": description, "exclusiveMinimum": 0}


def policy_params_schema() -> dict[str, Any]:
    """``operator.autoscale.params``: the scaling policy's fields (``PolicyParams``), each typed."""
    kinds = {"float": "number", "int": "integer", "bool": "boolean"}
    props: dict[str, Any] = {}
    for f in dataclasses.fields(PolicyParams):
        kind = kinds.get(str(f.type))
        if kind is None:
            continue  # not settable from a number or a boolean
        props[f.name] = {"type": kind, "description": f"PolicyParams.{f.name} (default {f.default!r})."}
    return _obj("Scaling policy parameters (GPUPOOL_SCALING_PARAMS, JSON): PolicyParams fields by their "
                "Python names; the operator validates the values and names a bad one.", props)


def values_schema() -> dict[str, Any]:
    image = _obj("The operator's container image.", {
        "repository": _s("Image repository, e.g. ghcr.io/gpupool/operator.", minLength=1),
        "tag": _s("Image tag; empty = the chart's appVersion."),
        "pullPolicy": _s("Kubernetes imagePullPolicy.", enum=["Always", "IfNotPresent", "Never"]),
    }, ("repository",))
    operator = _obj("The operator Deployment.", {
        "image": image,
        "imagePullSecrets": {"type": "array", "description": "Secrets to pull the image with ({name: ...}).",
                             "items": _obj("A Secret in the operator's namespace.", {"name": _s("Its name.")},
                                           ("name",))},
        "replicas": _i("Operator replicas: one leads (holds the Lease), the others are warm standbys.", 1, 10),
        "leaseSeconds": _i("Leader Lease duration: a crashed leader is replaced within this.", 2, 300),
        "resyncSeconds": _i("Full re-plan at least this often without events.", 1, 3600),
        "migTimeoutSeconds": _i("A MIG re-layout not applied by then is abandoned.", 1, 86400),
        "migFailureCooldownSeconds": _i("A node whose MIG re-layout failed stays out of MIG plans this long.", 0,
                                        604800),
        "autoscale": _obj("The live-scaling loop (GPUPOOL_AUTOSCALE, GPUPOOL_SCALING_*).", {
            "enabled": _b("Run the scaling loop; false: every model runs minReplicas (GPUPOOL_AUTOSCALE)."),
            "tickSeconds": _seconds("Seconds between decisions (GPUPOOL_SCALING_TICK_SECONDS)."),
            "scrapeTimeoutSeconds": _seconds("Per-replica metrics request timeout (GPUPOOL_SCRAPE_TIMEOUT_SECONDS)."),
            "stateSeconds": _seconds("status.scaling is written at least this often, and on every change "
                                     "(GPUPOOL_SCALING_STATE_SECONDS)."),
            "params": policy_params_schema(),
        }),
        "verbose": _b("Log every cycle and watch event."),
        "health": _listener("probe (/healthz, /readyz)", 8081),
        "metrics": _listener("Prometheus /metrics", 8080),
        "resources": _free("The operator container's resources (requests, limits)."),
        "podAntiAffinity": _s("Keep replicas on different nodes: soft (preferred), hard (required) or none.",
                              enum=["soft", "hard", "none"]),
        "affinity": _free("A full pod affinity; when set it replaces podAntiAffinity."),
        "nodeSelector": _strings("Node labels the operator pods must run on."),
        "tolerations": {"type": "array", "description": "Tolerations of the operator pods.",
                        "items": {"type": "object"}},
        "priorityClassName": _s("PriorityClass of the operator pods (e.g. system-cluster-critical)."),
        "podAnnotations": _strings("Extra annotations on the operator pods."),
        "podLabels": _strings("Extra labels on the operator pods."),
    })
    worker = _obj("Replica pods the operator creates (a pool's spec.replicaDefaults overrides these).", {
        "image": _s("The torch-free CPU worker image (CPU replicas of Builtin and ONNX Tensors models), e.g. "
                    "ghcr.io/gpupool/worker:0.1.0.", minLength=1),
        "cudaImage": _s("The torch/CUDA worker image (GPU and MIG replicas, every other model), e.g. "
                        "ghcr.io/gpupool/worker-cuda:0.1.0; empty = image for every replica."),
        "serviceAccount": _s("ServiceAccount of replica pods, in each pool's namespace; empty = default."),
        "drainSeconds": _i("A stopping replica reports not-ready and keeps serving this long.", 0, 3600),
        "stopGraceSeconds": _i("Then it stops within this long.", 0, 3600),
        "podSecurityContext": _free("Pod securityContext of replica pods."),
        "securityContext": _free("Container securityContext of the worker container."),
        "resources": _obj("Requests and limits merged under each replica's own (its GPU, MIG slice or CPU).", {
            "requests": _strings("e.g. {memory: 1Gi}."),
            "limits": _strings("e.g. {memory: 8Gi}."),
        }),
    })
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "gpupool chart values",
        "description": "Generated by scripts/chart_schema.py (the config section from the GPUPoolConfig model): "
                       "do not edit by hand.",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "global": {"type": "object", "description": "Helm's global values (unused by this chart)."},
            "namespace": _obj("The operator's namespace.", {
                "create": _b("Render a Namespace for namespace.name (not for the release namespace: use "
                             "helm --create-namespace for that)."),
                "name": _s("Namespace of the operator, its Lease and the MIG ConfigMap; empty = the release "
                           "namespace.", pattern=r"^$|" + DNS_LABEL),
            }),
            "operator": operator,
            "podDisruptionBudget": _obj("PodDisruptionBudget of the operator pods.", {
                "enabled": _b("Render it."),
                "maxUnavailable": _i("Operator pods a voluntary disruption (drain) may take at once.", 1),
            }),
            "worker": worker,
            "serviceAccount": _obj("The operator's ServiceAccount.", {
                "create": _b("Make it (else it must exist)."),
                "name": _s("Its name.", pattern=DNS_NAME),
                "annotations": _strings("Annotations, e.g. a cloud IAM role."),
            }),
            "metrics": _obj("How the operator's metrics are exposed.", {
                "service": _obj("A Service in front of every operator replica's /metrics.", {
                    "enabled": _b("Render it."),
                    "type": _s("Service type.", enum=["ClusterIP", "NodePort", "LoadBalancer"]),
                    "port": _i("Service port.", 1, 65535),
                    "annotations": _strings("Annotations on the Service."),
                }),
                "serviceMonitor": _monitor("ServiceMonitor"),
                "podMonitor": _monitor("PodMonitor"),
                "dashboard": _obj("The Grafana dashboard as a ConfigMap for Grafana's dashboard sidecar.", {
                    "enabled": _b("Render it."),
                    "namespace": _s("Namespace of the ConfigMap (Grafana's); empty = the operator's.",
                                    pattern=r"^$|" + DNS_LABEL),
                    "labels": _strings("Labels the sidecar selects on (kube-prometheus-stack: grafana_dashboard)."),
                    "annotations": _strings("Annotations, e.g. the sidecar's folder."),
                }),
            }),
            "migManager": _obj("NVIDIA MIG manager's mig-parted ConfigMap, where the operator adds the layouts it "
                               "plans.", {
                "configMapName": _s("Its name (the GPU Operator's migManager.config.name).", pattern=DNS_NAME),
                "namespace": _s("Its namespace, e.g. gpu-operator; empty = the operator's.",
                                pattern=r"^$|" + DNS_LABEL),
                "createConfigMap": _b("Make it (false: the GPU Operator's own ConfigMap of that name is used)."),
            }, ("configMapName",)),
            "config": config_schema(),
        },
    }


def render() -> str:
    return json.dumps(values_schema(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail when the checked-in schema differs")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not SCHEMA_PATH.is_file() or SCHEMA_PATH.read_text() != text:
            print(f"{SCHEMA_PATH.relative_to(ROOT)} is out of date: run python scripts/chart_schema.py",
                  file=sys.stderr)
            return 1
        return 0
    SCHEMA_PATH.write_text(text)
    print(f"wrote {SCHEMA_PATH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
