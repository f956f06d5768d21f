"""Backbone registry: a pre-trained timm ViT with its original head, its input format and its pre-training domain.

Every backbone honours timm's model contract (`forward_features`, `forward_head`, `get_classifier`,
`reset_classifier`), which is all the strategies and the retention protocols use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import timm
from safetensors import SafetensorError
import torch
from timm.data import resolve_data_config
from torch import nn

from benchmark.config import require
from benchmark.datasets.fashion_mnist import CLASS_NAMES, DEBIAN_DIR, DEFAULT_DATA_DIR, load_fashion_mnist, seeded_subset
from benchmark.datasets.images import ImageSpec, to_backbone_input
from benchmark.errors import ConfigError
from benchmark.registry import BuilderRegistry

ASSETS = Path(__file__).resolve().parent / "assets"
VIT_MINI_CHECKPOINT = ASSETS / "vit-mini.safetensors"

# vit-mini: ViT-Tiny's width and heads, 6 blocks, on 28x28 grey-scale input (Fashion-MNIST's own size) in 4x4 patches:
# 2.7 M parameters, 49 patches + the class token.
VIT_MINI_ARCH: dict[str, Any] = dict(
    img_size=28, patch_size=4, in_chans=1, embed_dim=192, depth=6, num_heads=3, num_classes=len(CLASS_NAMES)
)
VIT_MINI_IMAGE = dict(input_size=(1, 28, 28), mean=(0.2860,), std=(0.3530,), interpolation="bilinear")


@dataclass(frozen=True)
class PretrainEvalSet:
    """Images and labels from the pre-training domain (a seeded subset of one split), in the backbone's input
    format: the test split is scored, the train split is the k-NN memory bank."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]


@dataclass
class Backbone:
    """A pre-trained model (with its pre-training head) and how to evaluate it on its pre-training domain."""

    name: str
    model: nn.Module
    image_spec: ImageSpec
    pretrain_data: Callable[[str, int, int], PretrainEvalSet] = field(repr=False)  # (split, size, seed) -> subset


BACKBONES = BuilderRegistry("backbone", "backbones")  # name -> (params dataclass, builder(params) -> Backbone)
register_backbone = BACKBONES.register_builder


def backbone_params(name: str, raw: Mapping[str, Any]) -> Any:
    """Validate a backbone's hyper-parameters without loading it."""
    return BACKBONES.params(name, raw)


def build_backbone(name: str, **raw: Any) -> Backbone:
    return BACKBONES.builder(name)(BACKBONES.params(name, raw))


@dataclass(frozen=True)
class VitMiniParams:
    """Paths default to "" so that a run's identity does not depend on where the repository lies."""

    checkpoint: str = ""  # safetensors file from `python -m benchmark.pretrain`; "" = the bundled one
    data_dir: str = ""  # where Fashion-MNIST is (or is unpacked / downloaded to); "" = $CL_BENCH_DATA or ./data
    debian_dir: str = str(DEBIAN_DIR)  # Debian's dataset-fashion-mnist package
    download: bool = True  # let torchvision download Fashion-MNIST if it is nowhere on disk

    def __post_init__(self) -> None:
        require(Path(self.checkpoint_path).is_file(), "checkpoint",
                "an existing file (regenerate it with `python -m benchmark.pretrain`)", self.checkpoint_path)

    @property
    def checkpoint_path(self) -> str:
        return self.checkpoint or str(VIT_MINI_CHECKPOINT)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir) if self.data_dir else DEFAULT_DATA_DIR


def create_vit_mini(checkpoint: str | None, arch: Mapping[str, Any] = VIT_MINI_ARCH) -> nn.Module:
    """The vit-mini architecture; with a checkpoint, weights are loaded through timm's own pretrained-file path."""
    # custom_load=False: the file is a plain state dict (some timm releases route ViT files to the .npz loader).
    overlay = dict(VIT_MINI_IMAGE, num_classes=arch["num_classes"], first_conv="patch_embed.proj", classifier="head",
                   custom_load=False)
    if checkpoint is not None:
        overlay["file"] = checkpoint
    return timm.create_model("vit_tiny_patch16_224", pretrained=checkpoint is not None,
                             pretrained_cfg_overlay=overlay, **arch)


def card_path(checkpoint: str | Path) -> Path:
    """The card (architecture, recipe, accuracy) lies beside the checkpoint, with a .json suffix."""
    return Path(checkpoint).with_suffix(".json")


def read_card(checkpoint: str | Path = VIT_MINI_CHECKPOINT) -> dict[str, Any]:
    return json.loads(card_path(checkpoint).read_text())


def fashion_mnist_data(params: VitMiniParams, spec: ImageSpec) -> Callable[[str, int, int], PretrainEvalSet]:
    def load(split: str, size: int, seed: int) -> PretrainEvalSet:
        images, labels = load_fashion_mnist(split == "train", params.data_path, Path(params.debian_dir),
                                            params.download)
        subset = seeded_subset(labels, size, seed)
        return PretrainEvalSet(f"fashion-mnist-{split}", to_backbone_input(images[subset], spec), labels[subset],
                               CLASS_NAMES)

    return load


@register_backbone("vit-mini", VitMiniParams)
def vit_mini(params: VitMiniParams) -> Backbone:
    """ViT pre-trained on Fashion-MNIST by this project (see benchmark/assets/vit-mini.json for the recipe)."""
    try:
        arch = {k: v for k, v in read_card(params.checkpoint_path)["architecture"].items() if k != "timm_model"}
        model = create_vit_mini(params.checkpoint_path, arch)
    except (RuntimeError, OSError, KeyError, ValueError, SafetensorError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise ConfigError(f"backbones.vit-mini.checkpoint: cannot load {params.checkpoint_path!r} ({first_line}); "
                          "regenerate it with `python -m benchmark.pretrain`") from None
    spec = ImageSpec.from_timm(resolve_data_config(model=model))
    return Backbone("vit-mini", model.eval(), spec, fashion_mnist_data(params, spec))

