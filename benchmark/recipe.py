"""The recipe around a strategy's mechanism that the suite, not the strategy, carries out: how images are prepared
(the input pipeline) and at what precision a run computes.

Published numbers come from whole recipes. Two runs of the same mechanism on the same weights differ when one feeds
the backbone's normalised inputs and the other [0, 1] pixels (LAMDA-PILOT, RanPAC, InfLoRA and the l2p/dualprompt
ports feed [0, 1] pixels to their ViT-B/16), crops with another scale range or resizes test images otherwise, or
trains in bf16 where the reference trains in fp32. So every strategy configuration carries two recipe settings
(`RecipeConfig`): `input`, a named pipeline of `INPUTS`, and `precision`; a strategy's `reference` presets set them
to what its reference code does, and the suite's own protocol (`input: backbone`, `precision: suite`) stays the
default. A run records the recipe it used (`recipe_block`, the result's `recipe`), and a report says where it differs
from the recipe of a published number it is shown beside.

Retention is measured with the backbone's own pipeline whatever the recipe: it scores the pre-training domain under
the protocol the backbone was published with, the same for every strategy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from benchmark.config import require
from benchmark.datasets.images import ImageSpec
from benchmark.registry import Registry

INTERPOLATIONS = ("bilinear", "bicubic")
PRECISIONS = ("suite", "fp32", "bf16")  # suite: the suite file's `precision:` (the suite's own protocol)


@dataclass(frozen=True)
class InputPipeline:
    """How images become a backbone's input, where a reference differs from the backbone's own pipeline (None: the
    backbone's value, from its timm data config). Train: RandomResizedCrop(size, scale=`train_scale`,
    ratio=(3/4, 4/3), `train_interpolation`) + horizontal flip (streams with `augment: rrc_flip`); test: resize the
    shorter side to floor(size / `crop_pct`) with `interpolation`, centre-crop to size. Then to [0, 1], and with
    `normalize` the backbone's mean/std."""

    source: str  # who prepares images this way (docs/recipes.md and the recipe record name it)
    normalize: bool = True  # False: [0, 1] pixels, no mean/std
    train_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop's area range (timm's and torchvision's default)
    train_interpolation: Optional[str] = None
    crop_pct: Optional[float] = None  # 224 / 256 = 0.875: Resize(256) + CenterCrop(224); 1.0: Resize(224)
    interpolation: Optional[str] = None  # of the test resize

    def __post_init__(self) -> None:
        low, high = self.train_scale
        require(0 < low <= high <= 1, "train_scale", "0 < low <= high <= 1", self.train_scale)
        require(self.crop_pct is None or 0 < self.crop_pct <= 1, "crop_pct", "in (0, 1] or null", self.crop_pct)
        for key in ("train_interpolation", "interpolation"):
            value = getattr(self, key)
            require(value is None or value in INTERPOLATIONS, key, f"null or one of {', '.join(INTERPOLATIONS)}",
                    value)

    def image_spec(self, backbone: ImageSpec) -> ImageSpec:
        """The backbone's spec with this pipeline's choices: what a run's stream prepares its images with."""
        channels = len(backbone.mean)
        return dataclasses.replace(
            backbone,
            mean=backbone.mean if self.normalize else (0.0,) * channels,
            std=backbone.std if self.normalize else (1.0,) * channels,
            train_scale=self.train_scale,
            train_interpolation=self.train_interpolation or backbone.train_interpolation,
            crop_pct=backbone.crop_pct if self.crop_pct is None else self.crop_pct,
            interpolation=self.interpolation or backbone.interpolation,
        )


INPUTS: Registry[InputPipeline] = Registry("input pipeline")
INPUTS.register("backbone")(InputPipeline(
    source="the backbone's own timm data config (mean/std, crop_pct, interpolation): the suite's protocol"))
# LAMDA-PILOT@2647455 and RevisitingCIL@a2e6b71 `utils/data.py` `build_transform` (iCIFAR224 and iImageNetR alike,
# `common_trsf = []`), RanPAC@012927f `utils/data.py:24-47` for ImageNet-R: no Normalize, RandomResizedCrop(224,
# scale=(0.05, 1.0)) with torchvision's default (bilinear) interpolation, test Resize(256, bicubic) + CenterCrop(224).
INPUTS.register("unnormalised")(InputPipeline(
    source="LAMDA-PILOT, RevisitingCIL, RanPAC (ImageNet-R) build_transform: [0, 1] pixels, crop scale (0.05, 1), "
           "test Resize(256) + CenterCrop(224)",
    normalize=False, train_scale=(0.05, 1.0), train_interpolation="bilinear", crop_pct=224 / 256,
    interpolation="bicubic"))
# RanPAC@012927f `utils/data.py:36-43` for CIFAR-224 (`isCifar`): the same, but test Resize(224) + CenterCrop(224).
INPUTS.register("unnormalised-resize224")(InputPipeline(
    source="RanPAC build_transform for CIFAR-224: [0, 1] pixels, crop scale (0.05, 1), test Resize(224)",
    normalize=False, train_scale=(0.05, 1.0), train_interpolation="bilinear", crop_pct=1.0, interpolation="bicubic"))
# InfLoRA@e08b00e `utils/data.py:113-178` (a CODA-Prompt lineage): Normalize(mean 0, std 1), torchvision's
# RandomResizedCrop(224) (scale (0.08, 1), bilinear); test Resize(256) + CenterCrop(224) on ImageNet-R, Resize(224)
# on CIFAR, both bilinear.
INPUTS.register("unnormalised-bilinear")(InputPipeline(
    source="InfLoRA (ImageNet-R): [0, 1] pixels, crop scale (0.08, 1), test Resize(256) + CenterCrop(224), bilinear",
    normalize=False, train_interpolation="bilinear", crop_pct=224 / 256, interpolation="bilinear"))
INPUTS.register("unnormalised-bilinear-resize224")(InputPipeline(
    source="InfLoRA (CIFAR-100): [0, 1] pixels, crop scale (0.08, 1), test Resize(224), bilinear",
    normalize=False, train_interpolation="bilinear", crop_pct=1.0, interpolation="bilinear"))


@dataclass(frozen=True)
class RecipeConfig:
    """The recipe settings every strategy configuration carries (its dataclass inherits them); None: filled by the
    strategy's preset, else the suite's protocol. Call `resolve_recipe()` in `__post_init__` after `apply_preset`."""

    input: Optional[str] = None  # an input pipeline of benchmark.recipe.INPUTS; default `backbone`
    precision: Optional[str] = None  # suite (the suite file's `precision:`), fp32 or bf16; default `suite`

    def resolve_recipe(self) -> None:
        if self.input is None:
            object.__setattr__(self, "input", "backbone")
        if self.precision is None:
            object.__setattr__(self, "precision", "suite")
        require(self.input in INPUTS, "input", f"one of {INPUTS.valid()}", self.input)
        require(self.precision in PRECISIONS, "precision", f"one of {', '.join(PRECISIONS)}", self.precision)


def input_pipeline(strategy_params: Mapping[str, Any]) -> InputPipeline:
    """The pipeline a run's (validated) strategy configuration names; a strategy without the setting (a plugin whose
    configuration does not inherit RecipeConfig) gets the backbone's."""
    return INPUTS.get(strategy_params.get("input") or "backbone")


def run_precision(strategy_params: Mapping[str, Any], suite_precision: str) -> str:
    """fp32 or bf16: the strategy's own `precision` when it sets one, else the suite's (already resolved)."""
    own = strategy_params.get("precision") or "suite"
    return suite_precision if own == "suite" else own


def recipe_block(strategy_params: Mapping[str, Any], precision: str, class_order: str,
                 training: Mapping[str, Any]) -> dict[str, Any]:
    """What a result records of its recipe: the input pipeline (name and settings), precision, class order and the
    strategy's training recipe (`Strategy.recipe()`: optimiser, schedule, clipping, head initialisation, modes)."""
    name = strategy_params.get("input") or "backbone"
    pipeline = dataclasses.asdict(INPUTS.get(name))
    pipeline["train_scale"] = list(pipeline["train_scale"])
    return {"input": name, "input_pipeline": pipeline, "precision": precision, "class_order": class_order,
            **training}
