"""What a Hugging Face folder says about itself: its task and, for sentence-transformers models,
the pooling, normalization and dense layers (``modules.json`` and each module's ``config.json``).

A purely computational module over the folder's JSON files (read, never executed: no remote
code). Both the sentence-transformers 2-5 layout (``pooling_mode_mean_tokens: true``,
``sentence_transformers.models.Pooling``) and the 6.x one (``pooling_mode: "cls"``,
``sentence_transformers.sentence_transformer.modules.pooling.Pooling``) are read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpupool_worker.sources.errors import Reason, SourceError

__all__ = ["POOLING_MODES", "Dense", "FolderFacts", "SentenceConfig", "read_folder"]

POOLING_MODES = ("cls", "mean", "max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_FLAG_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
               "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
               "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
_ALIASES = {"mean_tokens": "mean", "cls_token": "cls", "max_tokens": "max", "weightedmean_tokens": "weightedmean"}


@dataclass(frozen=True, slots=True)
class Dense:
    path: str
    in_features: int
    out_features: int
    bias: bool
    activation: str


@dataclass(frozen=True, slots=True)
class SentenceConfig:
    pooling: tuple[str, ...] = ("mean",)
    normalize: bool = False
    dense: tuple[Dense, ...] = ()
    max_seq_length: int | None = None


@dataclass(frozen=True, slots=True)
class FolderFacts:
    """The task-relevant facts of a transformer folder."""

    architectures: tuple[str, ...]
    model_type: str
    num_labels: int
    labels: tuple[str, ...]
    max_positions: int | None
    sentence: SentenceConfig | None
    """Set when the folder is a sentence-transformers model (it has modules.json)."""
    cross_encoder: bool
    """config.json carries sentence-transformers' CrossEncoder settings."""

    @property
    def has_classifier(self) -> bool:
        return any(a.endswith("ForSequenceClassification") for a in self.architectures)

    def guess_task(self) -> str:
        if self.sentence is not None:
            return "sentence-embedding"
        if self.has_classifier:
            return "reranking" if self.num_labels == 1 or self.cross_encoder else "sequence-classification"
        return "sentence-embedding"


def _json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SourceError(Reason.FORMAT_MISMATCH, f"{what}: {path.name} is missing") from None
    except ValueError as exc:
        raise SourceError(Reason.FORMAT_MISMATCH, f"{what}: {path.name} is not JSON: {exc}") from None


def _pooling(config: dict[str, Any], what: str) -> tuple[str, ...]:
    mode = config.get("pooling_mode")
    modes: tuple[str, ...]
    if isinstance(mode, str):
        modes = (_ALIASES.get(mode, mode),)
    else:
        modes = tuple(m for flag, m in _FLAG_MODES.items() if config.get(flag))
    for m in modes:
        if m not in POOLING_MODES:
            raise SourceError(Reason.FORMAT_MISMATCH, f"{what}: pooling mode {m!r} is not one of {POOLING_MODES}")
    if not modes:
        raise SourceError(Reason.FORMAT_MISMATCH, f"{what}: the Pooling module names no pooling mode")
    return modes


def _sentence(directory: Path, what: str) -> SentenceConfig | None:
    modules_path = directory / "modules.json"
    if not modules_path.is_file():
        return None
    pooling: tuple[str, ...] = ("mean",)
    normalize = False
    dense: list[Dense] = []
    for module in _json(modules_path, what):
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        sub = directory / str(module.get("path", ""))
        if kind == "Transformer":
            continue
        if kind == "Pooling":
            pooling = _pooling(_json(sub / "config.json", f"{what} ({module.get('path')})"), what)
        elif kind == "Normalize":
            normalize = True
        elif kind == "Dense":
            cfg = _json(sub / "config.json", f"{what} ({module.get('path')})")
            activation = str(cfg.get("activation_function", "torch.nn.modules.activation.Tanh")).rsplit(".", 1)[-1]
            dense.append(Dense(str(module.get("path")), int(cfg["in_features"]), int(cfg["out_features"]),
                               bool(cfg.get("bias", True)), activation))
        else:
            raise SourceError(Reason.FORMAT_MISMATCH, f"{what}: sentence-transformers module {module.get('type')} is "
                              "not supported (supported: Transformer, Pooling, Normalize, Dense)")
    max_len = None
    st = directory / "sentence_bert_config.json"
    if st.is_file():
        max_len = _json(st, what).get("max_seq_length")
    return SentenceConfig(pooling, normalize, tuple(dense), int(max_len) if max_len else None)


def read_folder(directory: Path, what: str) -> FolderFacts:
    config = _json(directory / "config.json", what)
    id2label = config.get("id2label") or {}
    labels = tuple(str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(len(id2label)))
    num_labels = int(config.get("num_labels", len(labels) or 0)) or len(labels)
    return FolderFacts(
        architectures=tuple(config.get("architectures") or ()),
        model_type=str(config.get("model_type", "")),
        num_labels=num_labels,
        labels=labels,
        max_positions=config.get("max_position_embeddings"),
        sentence=_sentence(directory, what),
        cross_encoder="sentence_transformers" in config,
    )
