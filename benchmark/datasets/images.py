"""A backbone's input format, and turning raw image tensors into it once, at load time.

Small data sets (digits, Fashion-MNIST) are decoded once and kept as ready tensors, so no epoch re-decodes
or re-resizes an image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ImageSpec:
    """What a backbone expects: channels x height x width, normalisation and resize interpolation; and how training
    crops (a run's input pipeline may change any of these: benchmark/recipe.py)."""

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    crop_pct: float = 1.0  # evaluation: resize the shorter side to size / crop_pct, then centre-crop (timm)
    crop_mode: str = "center"
    train_scale: tuple[float, float] = (0.08, 1.0)  # training's RandomResizedCrop area range (timm's default)
    train_interpolation: Optional[str] = None  # training's crop interpolation; None: `interpolation`

    @classmethod
    def from_timm(cls, data_config: Mapping[str, Any]) -> ImageSpec:
        """From `timm.data.resolve_data_config(model=...)`, so the spec travels with the model."""
        return cls(
            input_size=tuple(data_config["input_size"]),
            mean=tuple(data_config["mean"]),
            std=tuple(data_config["std"]),
            interpolation=data_config.get("interpolation", "bilinear"),
            crop_pct=float(data_config.get("crop_pct") or 1.0),
            crop_mode=data_config.get("crop_mode") or "center",
        )


def resize(images: torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    """Images in [0, 1], shape (N, C, h, w) -> float32 (N, C, H, W) in [0, 1] at the backbone's resolution."""
    _, height, width = spec.input_size
    x = images.float()
    if x.shape[-2:] != (height, width):
        mode = "bicubic" if spec.interpolation == "bicubic" else "bilinear"
        x = F.interpolate(x, size=(height, width), mode=mode, align_corners=False).clamp_(0.0, 1.0)
    return x


def normalize(images: torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    """Images in [0, 1] with 1 or the backbone's channels -> the backbone's channels, normalised by mean/std."""
    channels = spec.input_size[0]
    x = images
    if x.shape[1] != channels:
        if x.shape[1] != 1:
            raise ValueError(f"cannot map {x.shape[1]}-channel images to a {channels}-channel backbone")
        x = x.expand(-1, channels, -1, -1)
    mean = torch.tensor(spec.mean, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=x.dtype).view(1, -1, 1, 1)
    return ((x - mean) / std).contiguous()


def to_backbone_input(images: torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    """Images in [0, 1] -> the backbone's resolution, channels and normalisation."""
    return normalize(resize(images, spec), spec)
