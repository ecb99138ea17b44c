"""InferencePool (gpupool.io/v1alpha1): the models a team wants served, and what gpupool did about it.

An ML team writes the spec: for each model, where its weights live, how the engine runs it, how much
accelerator memory one replica needs, and the hardware it may run on in order of preference (whole
GPUs of a product, MIG slices, CPU cores) with the throughput it reaches there. gpupool packs every
pool's replicas onto the cluster's cheapest suitable hardware and reports in the status where each
replica runs and what it costs.

Every cross-field rule is written twice on purpose: as a CEL rule the API server enforces (so a bad
manifest is rejected at ``kubectl apply`` with the field named) and as a pydantic validator (so the
operator and tests reject the same objects without a server). ``tests/api`` checks the two agree.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from ._base import ApiModel, CelRule, list_map, schema_extra
from .conditions import Condition
from .groupversion import CrdInfo, PrinterColumn
from .meta import ObjectMeta
from .modelserving import ModelTask, ModelTensors, RuntimeSpec, RuntimeType
from .replica import ReplicaDefaults
from .types import (
    Duration,
    GpuProduct,
    LabelValue,
    MigProfileName,
    ModelName,
    PositiveDecimal,
    Quantity,
    Rate,
    Timestamp,
    UsdAmount,
    mig_resource_name,
    parse_duration,
    parse_quantity,
)

__all__ = [
    "INFERENCE_POOL_CRD",
    "MAX_GPUS_PER_REPLICA",
    "Budget",
    "CpuTarget",
    "EngineOptions",
    "GpuTarget",
    "HardwareOption",
    "HardwareType",
    "InferencePool",
    "InferencePoolSpec",
    "InferencePoolStatus",
    "LatencyObjective",
    "LatencyPercentile",
    "MigTarget",
    "ModelFormat",
    "ModelScaling",
    "ModelSource",
    "ModelSpec",
    "ModelStatus",
    "PlacementStrategy",
    "PoolScaling",
    "Precision",
    "ReplicaPlacement",
    "ScalingBehavior",
    "TaintEffect",
    "Toleration",
    "TolerationOperator",
]

MAX_GPUS_PER_REPLICA = 8
"""The most GPUs one node holds (an HGX/DGX board); tensor parallelism stays within one node."""
MAX_MODELS = 32
MAX_HARDWARE_OPTIONS = 8
MAX_REPLICAS = 1000
SOURCE_URI_PATTERN = r"^(hf|s3|gs|oci|pvc|https|builtin)://[^\s]+$"
GS_MESSAGE = ("gs:// is not supported: Cloud Storage speaks the S3 protocol, so use s3://<bucket>/<prefix> with "
              "AWS_ENDPOINT_URL=https://storage.googleapis.com and HMAC keys in the credentials Secret")
RESOURCE_PATTERN = r"^(cpu|nvidia\.com/gpu|nvidia\.com/mig-[1-7]g\.[0-9]{1,3}gb(\.(me|gfx|me\.all))?)$"


class ModelFormat(StrEnum):
    """How the weights at the source are packaged."""

    SAFETENSORS = "SafeTensors"
    TORCHSCRIPT = "TorchScript"
    TORCH_EXPORT = "TorchExport"
    ONNX = "ONNX"
    BUILTIN = "Builtin"


class Precision(StrEnum):
    """Numeric precision the engine computes in."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"
    FP8 = "fp8"


class HardwareType(StrEnum):
    """Kind of hardware a replica may be placed on."""

    GPU = "GPU"
    MIG = "MIG"
    CPU = "CPU"


class LatencyPercentile(StrEnum):
    """Which request-latency percentile an objective bounds."""

    P50 = "P50"
    P90 = "P90"
    P95 = "P95"
    P99 = "P99"

    @property
    def quantile(self) -> float:
        return int(self.value[1:]) / 100


class PlacementStrategy(StrEnum):
    """How the placement engine trades cost against packing and failure isolation."""

    COST = "Cost"
    BIN_PACK = "BinPack"
    SPREAD = "Spread"


class ModelSource(ApiModel):
    """Where the worker loads the model from, and how it is packaged."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            CelRule(
                "(has(self.format) && self.format == 'Builtin') == self.uri.startsWith('builtin://')",
                "format Builtin goes with a builtin:// uri, and a builtin:// uri with format Builtin",
                ".uri",
            ),
            CelRule("!self.uri.startsWith('gs://')", GS_MESSAGE, ".uri"),
            CelRule("!has(self.sha256) || self.uri.startsWith('https://')",
                    "sha256 checks an https:// download; other sources are checked by their own digests",
                    ".sha256"),
        )
    )

    uri: Annotated[str, StringConstraints(pattern=SOURCE_URI_PATTERN, max_length=2048)]
    """Location of the weights: hf://<org>/<repo>[@revision], s3://<bucket>/<prefix>,
    oci://<registry>/<repository>:<tag> (an ORAS artifact), pvc://<claim>/<path> (mounted
    read-only), https://<host>/<file or .tar.gz/.zip archive>, or builtin://<name> for a model
    shipped inside the worker image. gs:// is refused: use s3:// against Cloud Storage's S3 API."""
    format: ModelFormat = ModelFormat.SAFETENSORS
    """Packaging of the weights: SafeTensors (a Hugging Face folder), ONNX (a graph; with task
    SentenceEmbedding, a Hub repository's onnx/model.onnx beside its tokenizer.json, served by ONNX
    Runtime in the CPU-only worker image), TorchScript (model.pt), TorchExport (a torch.export
    model.pt2) or Builtin."""
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$", max_length=64)] | None = None
    """sha256 (lower-case hex) of the file an https:// uri downloads (the archive, for an archive)."""
    revision: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._/-]+$", max_length=128)] | None = None
    """Revision to pin (a git commit, tag or branch for hf://, an object version elsewhere)."""
    credentials_secret_name: (
        Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)] | None
    ) = None
    """Name of a Secret in the pool's namespace holding credentials for the source, mounted
    read-only into the replicas (and nothing else is used): HF_TOKEN for hf://;
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally AWS_ENDPOINT_URL, AWS_REGION for s3://;
    BEARER_TOKEN or username/password for https://; username/password or .dockerconfigjson for
    oci://; ca.crt for a private certificate authority."""

    @model_validator(mode="after")
    def _builtin_matches_uri(self) -> ModelSource:
        if (self.format is ModelFormat.BUILTIN) != self.uri.startswith("builtin://"):
            raise ValueError("uri: format Builtin goes with a builtin:// uri, and a builtin:// uri with format Builtin")
        if self.uri.startswith("gs://"):
            raise ValueError(f"uri: {GS_MESSAGE}")
        if self.sha256 is not None and not self.uri.startswith("https://"):
            raise ValueError("sha256: sha256 checks an https:// download; other sources are checked by their own "
                             "digests")
        return self


class EngineOptions(ApiModel):
    """How the worker's engine runs the model."""

    precision: Precision = Precision.FP16
    """Numeric precision: fp32, fp16, bf16, int8 or fp8 (fp8 needs Hopper or newer GPUs)."""
    triton_kernels: bool = True
    """Use gpupool's fused Triton kernels where they apply (GPU only; ignored on CPU)."""
    torch_compile: bool = False
    """Compile the model with torch.compile at load time (slower start, faster steady state)."""
    cuda_graphs: bool = True
    """Replay CUDA graphs for small batches (GPU only): removes the kernel-launch overhead that
    dominates batches of a few rows."""
    max_batch_size: Annotated[int, Field(ge=1, le=4096)] = 32
    """Largest batch the dynamic batcher forms."""
    max_queue_delay: Duration = "5ms"
    """Longest a request waits for a batch to fill before it runs in a smaller one (e.g. 5ms)."""

    @property
    def max_queue_delay_seconds(self) -> float:
        return parse_duration(self.max_queue_delay)


class GpuTarget(ApiModel):
    """Whole GPUs of one product."""

    product: GpuProduct = Field(
        json_schema_extra=schema_extra(
            CelRule(
                "!self.contains('-MIG-')",
                "name the whole-GPU product; for a MIG slice use type MIG with a profile",
            )
        )
    )
    """GPU product: a catalog short name (A100-40GB, A100-80GB, H100-80GB, H100-NVL-94GB,
    H200-141GB, B200-180GB, GB200), matching every label value of that product, or an exact
    nvidia.com/gpu.product node label value such as NVIDIA-H100-80GB-HBM3 or Tesla-T4. Products
    are checked against the cluster's nodes by the operator, not here, so new GPUs need no CRD
    change; a product no node has is reported in status."""

    @model_validator(mode="after")
    def _not_a_mig_product(self) -> GpuTarget:
        if "-MIG-" in self.product:
            raise ValueError("product: name the whole-GPU product; for a MIG slice use type MIG with a profile")
        return self


class MigTarget(ApiModel):
    """A MIG slice: one named profile, or any profile with enough memory."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            CelRule(
                "has(self.profile) != has(self.minMemory)",
                "set exactly one of profile or minMemory",
            )
        )
    )

    profile: MigProfileName | None = None
    """A MIG profile as nvidia-smi names it, e.g. 1g.10gb, 3g.40gb or 1g.10gb+me. Requests the
    nvidia.com/mig-<profile> resource of the device plugin's mixed strategy."""
    min_memory: Quantity | None = None
    """Any MIG slice with at least this much memory (e.g. 20Gi): the engine picks the cheapest."""

    @model_validator(mode="after")
    def _exactly_one(self) -> MigTarget:
        if (self.profile is None) == (self.min_memory is None):
            raise ValueError("set exactly one of profile or minMemory")
        return self

    @property
    def min_memory_bytes(self) -> int | None:
        return None if self.min_memory is None else parse_quantity(self.min_memory)


class CpuTarget(ApiModel):
    """CPU cores on any node."""

    cores: Annotated[int, Field(ge=1, le=256)]
    """Whole CPU cores one replica requests."""
    memory: Quantity | None = None
    """Host memory one replica requests; defaults to the model's acceleratorMemory."""


_HARDWARE_RULES = tuple(
    CelRule(
        f"(self.type == '{t}') == has(self.{member})",
        f"{member} must be set when type is {t}, and only then",
        f".{member}",
    )
    for t, member in (("GPU", "gpu"), ("MIG", "mig"), ("CPU", "cpu"))
)


class HardwareOption(ApiModel):
    """One kind of hardware a replica may run on; exactly the member named by type is set."""

    model_config = ConfigDict(json_schema_extra=schema_extra(*_HARDWARE_RULES))

    type: HardwareType
    """GPU (whole GPUs), MIG (a MIG slice) or CPU (CPU cores)."""
    gpu: GpuTarget | None = None
    """Whole-GPU target; set when type is GPU."""
    mig: MigTarget | None = None
    """MIG slice target; set when type is MIG."""
    cpu: CpuTarget | None = None
    """CPU target; set when type is CPU."""
    inferences_per_second: Rate | None = None
    """Inferences per second one replica sustains on this hardware within the latency objective
    (a decimal string such as "120" or "0.8"). Optional; when given, the placement engine compares
    options by cost per inference and sizes replica counts for the load."""

    @model_validator(mode="after")
    def _member_matches_type(self) -> HardwareOption:
        members = {HardwareType.GPU: self.gpu, HardwareType.MIG: self.mig, HardwareType.CPU: self.cpu}
        for kind, member in members.items():
            if (self.type is kind) != (member is not None):
                name = kind.value.lower()
                raise ValueError(f"{name}: {name} must be set when type is {kind.value}, and only then")
        return self

    @property
    def resource_name(self) -> str | None:
        """The extended resource a replica requests here, or ``None`` for a MIG ``minMemory`` option."""
        if self.gpu is not None:
            return "nvidia.com/gpu"
        if self.cpu is not None:
            return "cpu"
        if self.mig is not None and self.mig.profile is not None:
            return mig_resource_name(self.mig.profile)
        return None


class LatencyObjective(ApiModel):
    """A bound on request latency measured at the worker."""

    percentile: LatencyPercentile = LatencyPercentile.P95
    """Percentile the target bounds: P50, P90, P95 or P99."""
    target: Duration
    """Latency the percentile must stay under, e.g. 200ms."""

    @property
    def target_seconds(self) -> float:
        return parse_duration(self.target)


_MODEL_RULES = (
    CelRule(
        "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
        "minReplicas must be less than or equal to maxReplicas",
        ".minReplicas",
    ),
    CelRule(
        "!has(self.gpusPerReplica) || self.gpusPerReplica == 1 || self.hardware.all(h, h.type != 'MIG')",
        "a replica spread over several GPUs (tensor parallel) cannot run on MIG slices: "
        "gpusPerReplica must be 1 when hardware lists a MIG option",
        ".gpusPerReplica",
    ),
    CelRule(
        "!has(self.engine) || !has(self.engine.precision) || self.engine.precision != 'fp8' || "
        "self.hardware.all(h, h.type != 'CPU')",
        "precision fp8 has no CPU kernels: choose another precision or remove the CPU option",
        ".engine.precision",
    ),
    CelRule(
        "self.hardware.all(h, h.type != 'MIG' || !has(h.mig.minMemory) || "
        "!quantity(h.mig.minMemory).isLessThan(quantity(self.acceleratorMemory)))",
        "a MIG option's minMemory must be at least the model's acceleratorMemory",
        ".hardware",
    ),
)


_GPUPOOL = "(!has(self.runtime) || !has(self.runtime.type) || self.runtime.type == 'gpupool')"
TASK_FORMATS: dict[ModelFormat, tuple[ModelTask, ...]] = {
    ModelFormat.SAFETENSORS: (ModelTask.SENTENCE_EMBEDDING, ModelTask.SEQUENCE_CLASSIFICATION, ModelTask.RERANKING),
    ModelFormat.BUILTIN: (ModelTask.SENTENCE_EMBEDDING,),
    ModelFormat.ONNX: (ModelTask.SENTENCE_EMBEDDING, ModelTask.IMAGE_CLASSIFICATION, ModelTask.TENSORS),
    ModelFormat.TORCHSCRIPT: (ModelTask.TENSORS,),
    ModelFormat.TORCH_EXPORT: (ModelTask.TENSORS,),
}
TASK_FORMAT_MESSAGE = (
    "task does not fit source.format for the gpupool runtime: SafeTensors serves SentenceEmbedding, "
    "SequenceClassification or Reranking; ONNX serves SentenceEmbedding, ImageClassification or Tensors; TorchScript "
    "and TorchExport serve Tensors; Builtin serves SentenceEmbedding (Auto always fits)")
_SERVING_RULES = (
    CelRule(
        "!has(self.task) || self.task != 'TextGeneration' || !" + _GPUPOOL,
        "task TextGeneration is served by an LLM runtime: set runtime.type to vllm, triton or custom",
        ".task",
    ),
    CelRule(
        "!" + _GPUPOOL + " || !has(self.task) || self.task == 'Auto' || self.task == 'TextGeneration' || "
        + " || ".join(f"(self.source.format == '{f.value}' && self.task in [{', '.join(repr(t.value) for t in ts)}])"
                      for f, ts in TASK_FORMATS.items()),
        TASK_FORMAT_MESSAGE,
        ".task",
    ),
    CelRule(
        "!has(self.tensors) || self.source.format == 'TorchScript' || self.source.format == 'TorchExport'",
        "tensors are declared for TorchScript and TorchExport programs; other formats carry their own",
        ".tensors",
    ),
    CelRule(
        "!has(self.runtime) || !has(self.runtime.type) || self.runtime.type != 'vllm' || "
        "self.source.format == 'SafeTensors'",
        "runtime vllm loads Hugging Face folders: source.format must be SafeTensors",
        ".runtime",
    ),
)


#: A label or taint key: an optional DNS-subdomain prefix and "/", then a name of at most 63 characters.
TAINT_KEY_PATTERN = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                     r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


class TolerationOperator(StrEnum):
    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


_TOLERATION_RULES = (
    CelRule("!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
            "value must be empty when operator is Exists", ".value"),
    CelRule("(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
            "an empty key needs operator Exists (it then tolerates every taint)", ".operator"),
    CelRule("!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            "tolerationSeconds applies only to effect NoExecute", ".tolerationSeconds"),
)


class Toleration(ApiModel):
    """A core/v1 Toleration, exactly as a Pod carries it: the replica pods get it, and the placement
    engine places them only on nodes whose NoSchedule and NoExecute taints they tolerate (and
    avoids untolerated PreferNoSchedule taints where it can), as kube-scheduler does."""

    model_config = ConfigDict(json_schema_extra=schema_extra(*_TOLERATION_RULES))

    key: Annotated[str, StringConstraints(pattern=TAINT_KEY_PATTERN, max_length=316)] | None = None
    """Taint key it tolerates (e.g. nvidia.com/gpu); empty with operator Exists: every taint."""
    operator: TolerationOperator | None = None
    """Exists (any value) or Equal (the value below; the default)."""
    value: LabelValue | None = None
    """Taint value to match with operator Equal."""
    effect: TaintEffect | None = None
    """NoSchedule, PreferNoSchedule or NoExecute; empty: every effect."""
    toleration_seconds: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    """With effect NoExecute: how long the pod stays once the taint appears (it does not change
    where the pod may go)."""

    @model_validator(mode="after")
    def _rules(self) -> Toleration:
        if self.operator is TolerationOperator.EXISTS and self.value:
            raise ValueError("value: value must be empty when operator is Exists")
        if not self.key and self.operator is not TolerationOperator.EXISTS:
            raise ValueError("operator: an empty key needs operator Exists (it then tolerates every taint)")
        if self.toleration_seconds is not None and self.effect is not TaintEffect.NO_EXECUTE:
            raise ValueError("tolerationSeconds: tolerationSeconds applies only to effect NoExecute")
        return self


class ModelSpec(ApiModel):
    """One model served by the pool."""

    model_config = ConfigDict(json_schema_extra=schema_extra(*_MODEL_RULES, *_SERVING_RULES))

    name: ModelName
    """Name of the model, unique in the pool; clients address it by this name (KServe v2
    model_name). Lower-case letters, digits and '-', starting with a letter, at most 40 characters."""
    source: ModelSource
    """Where the worker loads the model from."""
    task: ModelTask = ModelTask.AUTO
    """What the model does, which decides its tensors: SentenceEmbedding (text -> embedding),
    SequenceClassification (text -> logits, label), Reranking (query, document -> score),
    ImageClassification (image -> logits, label), Tensors (the program's own), TextGeneration
    (LLM runtimes only) or Auto (decided from the model's files)."""
    tensors: ModelTensors | None = None
    """Input and output tensors of a TorchScript or TorchExport program."""
    runtime: RuntimeSpec | None = None
    """The server the replicas run: gpupool's worker (default), vllm, triton or a custom image."""
    engine: EngineOptions = Field(default_factory=EngineOptions, json_schema_extra={"default": {}})
    """Engine options: precision, kernels, compilation and dynamic batching."""
    accelerator_memory: Quantity
    """Accelerator memory one replica needs in total (weights, KV cache, activations), e.g. 40Gi.
    With gpusPerReplica > 1 it is split evenly across the replica's GPUs."""
    gpus_per_replica: Annotated[int, Field(ge=1, le=MAX_GPUS_PER_REPLICA)] = 1
    """GPUs one replica spans (tensor parallelism, always within one node): 1 to 8."""
    hardware: list[HardwareOption] = Field(
        min_length=1,
        max_length=MAX_HARDWARE_OPTIONS,
        json_schema_extra=schema_extra(
            CelRule("self.all(x, self.exists_one(y, y == x))", "hardware options must be distinct"),
            x_kubernetes_list_type="atomic",
        ),
    )
    """Hardware the model may run on, most preferred first. The placement engine may pick a later
    option when it is cheaper for the same demand, subject to the pool's placementStrategy."""
    min_replicas: Annotated[int, Field(ge=0, le=MAX_REPLICAS)] = 1
    """Fewest replicas kept running; 0 needs spec.scaling.scaleToZero."""
    max_replicas: Annotated[int, Field(ge=1, le=MAX_REPLICAS)]
    """Most replicas the autoscaler may run."""
    latency_objective: LatencyObjective | None = None
    """Latency objective; hardware that cannot meet it is not used for this model."""
    target_queue_depth: Annotated[int, Field(ge=1, le=10000)] = 8
    """Requests queued per replica the autoscaler aims for: more scales up, less scales down."""
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=16, json_schema_extra=schema_extra(x_kubernetes_list_type="atomic")
    )
    """Tolerations of the replica pods (core/v1 Tolerations). GPU and MIG replicas also get the
    nvidia.com/gpu:NoSchedule toleration NVIDIA's GPU Operator expects; CPU replicas only these,
    so they never land on a tainted GPU node unless the model tolerates its taint."""
    allow_spot: bool | None = None
    """Spot capacity (nodes priced Spot, which the cloud may reclaim at any time). Unset: replicas
    may run on spot while at least one stays off spot; true: every replica may run on spot (needed
    for a product the cluster has only on spot); false: no replica runs on spot."""

    @model_validator(mode="after")
    def _cross_field(self) -> ModelSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas: minReplicas must be less than or equal to maxReplicas")
        if self.gpus_per_replica > 1 and any(h.type is HardwareType.MIG for h in self.hardware):
            raise ValueError("gpusPerReplica: a replica spread over several GPUs cannot run on MIG slices")
        if self.engine.precision is Precision.FP8 and any(h.type is HardwareType.CPU for h in self.hardware):
            raise ValueError("engine.precision: precision fp8 has no CPU kernels")
        need = self.accelerator_memory_bytes
        for option in self.hardware:
            slice_min = option.mig.min_memory_bytes if option.mig is not None else None
            if slice_min is not None and slice_min < need:
                raise ValueError("hardware: a MIG option's minMemory must be at least the model's acceleratorMemory")
        if any(self.hardware[i] == self.hardware[j] for i in range(len(self.hardware)) for j in range(i)):
            raise ValueError("hardware: hardware options must be distinct")
        self._serving_rules()
        return self

    def _serving_rules(self) -> None:
        gpupool = self.runtime_type is RuntimeType.GPUPOOL
        if self.task is ModelTask.TEXT_GENERATION and gpupool:
            raise ValueError("task: task TextGeneration is served by an LLM runtime: set runtime.type to vllm, "
                             "triton or custom")
        if gpupool and self.task not in (ModelTask.AUTO, ModelTask.TEXT_GENERATION) and \
                self.task not in TASK_FORMATS[self.source.format]:
            raise ValueError(f"task: {TASK_FORMAT_MESSAGE}")
        if self.tensors is not None and self.source.format not in (ModelFormat.TORCHSCRIPT, ModelFormat.TORCH_EXPORT):
            raise ValueError("tensors: tensors are declared for TorchScript and TorchExport programs; other formats "
                             "carry their own")
        if self.runtime_type is RuntimeType.VLLM and self.source.format is not ModelFormat.SAFETENSORS:
            raise ValueError("runtime: runtime vllm loads Hugging Face folders: source.format must be SafeTensors")

    @property
    def runtime_type(self) -> RuntimeType:
        return self.runtime.type if self.runtime is not None else RuntimeType.GPUPOOL

    @property
    def accelerator_memory_bytes(self) -> int:
        return parse_quantity(self.accelerator_memory)

    @property
    def memory_per_gpu_bytes(self) -> int:
        """Accelerator memory each of the replica's GPUs must hold."""
        return -(-self.accelerator_memory_bytes // self.gpus_per_replica)

    @property
    def allows_cpu(self) -> bool:
        return any(h.type is HardwareType.CPU for h in self.hardware)


class Budget(ApiModel):
    """A spending cap for the pool."""

    max_usd_per_hour: PositiveDecimal
    """Most the pool may cost per hour, in US dollars (a decimal string such as "250"). Replicas
    above minReplicas are not added past it; the Degraded condition reports when it binds."""


class ScalingBehavior(ApiModel):
    """How replica counts follow load. Unset fields take the cluster's GPUPoolConfig defaults."""

    scale_up_stabilization_window: Duration | None = None
    """How long load must stay high before replicas are added (cluster default 0s)."""
    scale_down_stabilization_window: Duration | None = None
    """How long load must stay low before replicas are removed (cluster default 5m)."""
    scale_to_zero: bool = False
    """Allow models with minReplicas 0 to drop to zero replicas, freeing their GPUs when idle. The
    first request after that waits for a cold start. Not done by the operator yet: with no
    activator to hold a request at zero, nothing would see the next one, so the live scaling loop
    keeps at least one replica of a model it scales, and a model with minReplicas 0 runs none
    until its minReplicas is raised (``gpupool simulate`` models the full behaviour)."""
    scale_to_zero_after: Duration | None = None
    """Idle time before the last replica of such a model is removed (cluster default 15m)."""


class InferencePoolSpec(ApiModel):
    """The models a team wants served, and pool-wide placement, budget and scaling policy."""

    model_config = ConfigDict(
        json_schema_extra=schema_extra(
            CelRule(
                "self.models.all(m, !has(m.minReplicas) || m.minReplicas > 0) || "
                "(has(self.scaling) && has(self.scaling.scaleToZero) && self.scaling.scaleToZero)",
                "a model with minReplicas 0 needs scaling.scaleToZero: true",
                ".models",
            )
        )
    )

    models: list[ModelSpec] = Field(min_length=1, max_length=MAX_MODELS, json_schema_extra=list_map("name"))
    """Models served by the pool (1 to 32), each with a unique name."""
    placement_strategy: PlacementStrategy | None = None
    """Cost (cheapest hardware meeting every objective), BinPack (fewest nodes and GPUs, leaving
    whole GPUs free) or Spread (replicas of a model on distinct nodes). Defaults to the cluster's
    GPUPoolConfig (Cost)."""
    budget: Budget | None = None
    """Optional spending cap."""
    scaling: ScalingBehavior | None = None
    """Scaling behaviour: stabilization windows and scale to zero."""
    replica_defaults: ReplicaDefaults | None = None
    """Overrides of the cluster's replica pod defaults (securityContext fields that cannot raise
    privileges, host cpu/memory/ephemeral-storage), merged field by field over them."""

    @model_validator(mode="after")
    def _pool_rules(self) -> InferencePoolSpec:
        seen: set[str] = set()
        for model in self.models:
            if model.name in seen:
                raise ValueError(f"models: duplicate model name {model.name!r}")
            seen.add(model.name)
        scale_to_zero = self.scaling is not None and self.scaling.scale_to_zero
        if not scale_to_zero and any(m.min_replicas == 0 for m in self.models):
            raise ValueError("models: a model with minReplicas 0 needs scaling.scaleToZero: true")
        return self

    def model(self, name: str) -> ModelSpec:
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(f"no model {name!r} in this pool")


# -- status -----------------------------------------------------------------------------------


class ReplicaPlacement(ApiModel):
    """Where one replica runs (or is about to)."""

    pod: Annotated[str, StringConstraints(max_length=253)] | None = None
    """Name of the replica's pod, once created."""
    node: Annotated[str, StringConstraints(max_length=253)] | None = None
    """Node the replica is placed on; absent while unscheduled."""
    resource: Annotated[str, StringConstraints(pattern=RESOURCE_PATTERN, max_length=64)]
    """Resource the replica holds: nvidia.com/gpu, nvidia.com/mig-<profile> (e.g.
    nvidia.com/mig-3g.40gb) or cpu."""
    count: Annotated[int, Field(ge=1, le=256)] = 1
    """How many units of the resource the replica holds (GPUs, or CPU cores)."""
    gpu_product: LabelValue | None = None
    """GPU product of the node (catalog short name, else its nvidia.com/gpu.product label), when
    the resource is a GPU or MIG slice."""
    ready: bool = False
    """Whether the replica passes its readiness check and serves requests."""
    usd_per_hour: UsdAmount | None = None
    """What the replica's share of the hardware costs per hour."""


class ModelStatus(ApiModel):
    """Observed state of one model."""

    name: ModelName
    """Name of the model (matches spec.models[].name)."""
    desired_replicas: Annotated[int, Field(ge=0)] = 0
    """Replicas the current plan wants."""
    ready_replicas: Annotated[int, Field(ge=0)] = 0
    """Replicas ready to serve."""
    serving_replicas: Annotated[int, Field(ge=0)] = 0
    """Ready replicas on nodes that are not KWOK fakes (annotation kwok.x-k8s.io/node: fake or label
    type: kwok): a KWOK node reports its pods Ready though nothing runs there to serve."""
    replicas: list[ReplicaPlacement] = Field(
        default_factory=list, max_length=MAX_REPLICAS, json_schema_extra={"x-kubernetes-list-type": "atomic"}
    )
    """Where each replica runs."""
    queue_depth: Annotated[int, Field(ge=0)] | None = None
    """Requests waiting across the model's replicas at the last sample."""
    inferences_per_second: UsdAmount | None = None
    """Observed inferences per second across the model's replicas."""
    usd_per_hour: UsdAmount | None = None
    """What the model's replicas cost per hour, in US dollars."""
    usd_per_million_inferences: UsdAmount | None = None
    """Cost of one million inferences at the observed rate, in US dollars; absent without traffic."""
    message: Annotated[str, StringConstraints(max_length=1024)] | None = None
    """Why the model is not fully placed or ready, when it is not."""


class ModelScaling(ApiModel):
    """The live scaling loop's view of one model: what its replicas report and what it decided."""

    name: ModelName
    """Name of the model (matches spec.models[].name)."""
    desired_replicas: Annotated[int, Field(ge=0)] = 0
    """Replicas the scaling policy wants now (placement chooses their shapes)."""
    ready_replicas: Annotated[int, Field(ge=0)] = 0
    """Replicas Ready to serve."""
    pending_replicas: Annotated[int, Field(ge=0)] = 0
    """Replicas asked for and still starting."""
    reporting_replicas: Annotated[int, Field(ge=0)] = 0
    """Ready replicas whose metrics were read fresh; fewer than ready: no scale-down."""
    queue_depth: UsdAmount | None = None
    """Requests waiting across the replicas at the last sample."""
    in_flight: UsdAmount | None = None
    """Requests accepted and not yet answered across the replicas at the last sample."""
    arrival_rate: UsdAmount | None = None
    """Requests per second arriving at the replicas over the last sample interval."""
    p99_seconds: UsdAmount | None = None
    """99th percentile request latency at the workers over the last sample interval (histogram
    bucket bound)."""
    usd_per_hour: UsdAmount | None = None
    """What the replicas the policy wants cost per hour, at the shapes' attributed prices."""
    usd_per_million_inferences: UsdAmount | None = None
    """Cost of a million inferences from what the workers served and charged; absent without traffic."""
    sample_age_seconds: UsdAmount | None = None
    """Age of the oldest sample behind these figures."""
    panic: bool = False
    """Whether the policy is in panic mode (short-window demand at 2x ready capacity)."""
    last_scale_time: Timestamp | None = None
    """When the policy last changed the replica count."""
    last_decision: Annotated[str, StringConstraints(max_length=1024)] = ""
    """The last decision and why (e.g. "scale up 2 -> 5 (+3 1x A100-80GB): demand 22.5 req/s ...")."""
    state: Annotated[str, StringConstraints(max_length=32768)] = ""
    """The policy's memory as JSON (window samples, envelopes, panic, pending scale-up), its times in
    seconds relative to observedAt: what a restarted or new leader continues from."""


class PoolScaling(ApiModel):
    """The live scaling loop's record for the pool, written by the leading operator."""

    observed_at: Timestamp
    """When these figures were sampled and this state written."""
    models: list[ModelScaling] = Field(default_factory=list, max_length=MAX_MODELS,
                                       json_schema_extra=list_map("name"))
    """Per model: signals, decision and the policy's state."""


class InferencePoolStatus(ApiModel):
    """Observed state of the pool, written by the operator through the status subresource."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The .metadata.generation this status describes."""
    conditions: list[Condition] = Field(default_factory=list, max_length=16, json_schema_extra=list_map("type"))
    """Ready, Placed, Scaling and Degraded, each with a reason and message."""
    models: list[ModelStatus] = Field(default_factory=list, max_length=MAX_MODELS, json_schema_extra=list_map("name"))
    """Per-model replicas, placements, load and cost."""
    model_count: Annotated[int, Field(ge=0)] = 0
    """Number of models in the pool."""
    ready_models: Annotated[int, Field(ge=0)] = 0
    """Models with at least minReplicas ready replicas."""
    desired_replicas: Annotated[int, Field(ge=0)] = 0
    """Replicas the current plan wants, over all models."""
    ready_replicas: Annotated[int, Field(ge=0)] = 0
    """Ready replicas, over all models."""
    serving_replicas: Annotated[int, Field(ge=0)] = 0
    """Ready replicas on nodes that are not KWOK fakes, over all models (see models[].servingReplicas)."""
    usd_per_hour: UsdAmount | None = None
    """What the whole pool costs per hour, in US dollars."""
    usd_per_million_inferences: UsdAmount | None = None
    """Pool-wide cost of one million inferences at the observed rate; absent without traffic."""
    placement_strategy: PlacementStrategy | None = None
    """The placement strategy in force: the pool's own, else the cluster default."""
    scaling: PoolScaling | None = None
    """The live scaling loop's signals, decisions and state (absent until a replica reports metrics)."""


class InferencePool(ApiModel):
    """InferencePool is a set of ML models gpupool serves on the cluster's GPUs, MIG slices and CPUs
    at the lowest cost that meets each model's objectives."""

    api_version: Literal["gpupool.io/v1alpha1"] = "gpupool.io/v1alpha1"
    """APIVersion defines the versioned schema of this representation of an object."""
    kind: Literal["InferencePool"] = "InferencePool"
    """Kind is a string value representing the REST resource this object represents."""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""
    spec: InferencePoolSpec
    """Desired state: the models and pool-wide policy."""
    status: InferencePoolStatus | None = None
    """Observed state, written by the operator."""

    def status_patch(self) -> dict[str, Any]:
        """A merge-patch body for the status subresource carrying this object's status."""
        status = self.status if self.status is not None else InferencePoolStatus()
        return {"status": status.to_wire()}


INFERENCE_POOL_CRD = CrdInfo(
    kind="InferencePool",
    plural="inferencepools",
    singular="inferencepool",
    scope="Namespaced",
    short_names=("ipool",),
    categories=("gpupool",),
    description=(InferencePool.__doc__ or "").replace("\n    ", " "),
    printer_columns=(
        PrinterColumn("Models", "integer", ".status.modelCount", "Number of models in the pool"),
        PrinterColumn("Ready", "integer", ".status.readyReplicas", "Ready replicas over all models"),
        PrinterColumn("Serving", "integer", ".status.servingReplicas",
                      "Ready replicas on nodes that are not KWOK fakes, over all models"),
        PrinterColumn("Desired", "integer", ".status.desiredReplicas", "Replicas the current plan wants"),
        PrinterColumn("$/h", "string", ".status.usdPerHour", "What the pool costs per hour (USD)"),
        PrinterColumn("$/1M", "string", ".status.usdPerMillionInferences", "USD per million inferences"),
        PrinterColumn(
            "Status", "string", '.status.conditions[?(@.type=="Ready")].reason', "Reason of the Ready condition"
        ),
        PrinterColumn(
            "Strategy", "string", ".status.placementStrategy", "Placement strategy in force", priority=1
        ),
        PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation"),
    ),
)
