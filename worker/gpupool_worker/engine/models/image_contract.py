"""The preprocessing contract of an image classifier, declared beside the model in the Hugging Face
image-processor format (``preprocessor_config.json``), and applied exactly as declared.

Clients send what cameras and decoders produce: ``image`` UINT8 ``[batch, height, width, 3]``
(RGB, channels last). The worker then, in order: resizes (``size``: ``{height, width}``, or
``{shortest_edge}`` keeping the aspect ratio; bilinear with antialiasing), center-crops
(``do_center_crop`` with ``crop_size``), rescales (``rescale_factor``, 1/255 by default),
normalizes per channel (``image_mean``, ``image_std``) and hands the model float32 NCHW. A contract
that does not end at the model's input size is refused at load, not discovered per request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gpupool_worker.sources.errors import Reason, SourceError

__all__ = ["CONTRACT_FILE", "ImageContract"]

CONTRACT_FILE = "preprocessor_config.json"


def _hw(value: Any, what: str) -> tuple[int, int] | int:
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return int(value["height"]), int(value["width"])
        if "shortest_edge" in value:
            return int(value["shortest_edge"])
    raise SourceError(Reason.FORMAT_MISMATCH, f"{what}: size {value!r} is neither {{height, width}} nor "
                      "{shortest_edge}")


@dataclass(frozen=True, slots=True)
class ImageContract:
    resize: tuple[int, int] | int | None
    """(height, width), or the shortest edge; None: no resize."""
    crop: tuple[int, int] | None
    rescale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def read(cls, directory: Path, what: str) -> ImageContract:
        path = directory / CONTRACT_FILE
        try:
            cfg = json.loads(path.read_text())
        except FileNotFoundError:
            raise SourceError(Reason.FORMAT_MISMATCH, f"{what}: image classification needs its preprocessing "
                              f"contract, {CONTRACT_FILE} (size, image_mean, image_std), beside the model") from None
        except ValueError as exc:
            raise SourceError(Reason.FORMAT_MISMATCH, f"{what}: {CONTRACT_FILE} is not JSON: {exc}") from None
        resize = _hw(cfg["size"], what) if cfg.get("do_resize", True) and "size" in cfg else None
        crop = None
        if cfg.get("do_center_crop") and "crop_size" in cfg:
            c = _hw(cfg["crop_size"], what)
            crop = (c, c) if isinstance(c, int) else c
        mean = tuple(float(x) for x in cfg.get("image_mean", (0.0, 0.0, 0.0))) if cfg.get("do_normalize", True) \
            else (0.0, 0.0, 0.0)
        std = tuple(float(x) for x in cfg.get("image_std", (1.0, 1.0, 1.0))) if cfg.get("do_normalize", True) \
            else (1.0, 1.0, 1.0)
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise SourceError(Reason.FORMAT_MISMATCH, f"{what}: image_mean and image_std need 3 values, std > 0")
        rescale = float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0
        return cls(resize, crop, rescale, mean, std)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        h, w = self._resized(height, width)
        return self.crop if self.crop is not None else (h, w)

    def _resized(self, height: int, width: int) -> tuple[int, int]:
        if self.resize is None:
            return height, width
        if isinstance(self.resize, int):
            short = min(height, width)
            return round(height * self.resize / short), round(width * self.resize / short)
        return self.resize

    def fixed_size(self) -> tuple[int, int] | None:
        """The size every image ends at, when the contract fixes it (a crop or a height x width)."""
        if self.crop is not None:
            return self.crop
        return self.resize if isinstance(self.resize, tuple) else None

    def apply(self, images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """UINT8 NHWC RGB -> float32 NCHW, per the contract (torch's antialiased resize: a worker
        without torch refuses image models at load, engine.models.onnx_model)."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
        h, w = self._resized(x.shape[2], x.shape[3])
        if (h, w) != (x.shape[2], x.shape[3]):
            x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        if self.crop is not None:
            ch, cw = self.crop
            top, left = max(0, (h - ch) // 2), max(0, (w - cw) // 2)
            x = x[:, :, top:top + ch, left:left + cw]
        mean = torch.tensor(self.mean)[None, :, None, None]
        std = torch.tensor(self.std)[None, :, None, None]
        x = (x * self.rescale - mean) / std
        return x.contiguous().numpy()
