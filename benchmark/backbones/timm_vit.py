"""Pretrained timm ViTs, by their timm name `<architecture>.<pretrained tag>`, with ImageNet-1k as pre-training domain.

- Names: the suites' three are registered (`FEATURED`: DINO self-supervised on ImageNet-1k, AugReg supervised on
  ImageNet-21k, and the same fine-tuned on ImageNet-1k); any other name that timm has pretrained weights for and
  whose model is timm's `VisionTransformer` class itself is accepted by the registry's family rule
  (`is_timm_vit`), e.g. `vit_small_patch16_224.dino` or `deit3_base_patch16_224.fb_in1k`. The tag is required: it
  pins the weights (a bare architecture name means timm's default tag, which can change between timm releases).
  Subclasses with another head shape (DeiT's distilled two-head models) and other families (EVA, BEiT) are not
  accepted: strategies rely on VisionTransformer's blocks and single head.
- Weights: timm's own pretrained machinery, `timm.create_model(name, pretrained=True)`: from the Hugging Face hub
  (`timm/<name>`) by default, or from `pretrained_file` through the same code path (`pretrained_cfg_overlay` with
  `file=`: the same checkpoint filter, the same strict load), for machines without network. The file is the hub's
  `model.safetensors`, or an original release (Google's AugReg `.npz` files go to timm's `.npz` loader, as timm
  loads them from their URL; DINO's `.pth`).
- The `head` protocol applies when the original head is ImageNet-1k's (1000 outputs, timm's sorted-wnid label
  order, as timm's `infer_imagenet_subset` reads it): the in1k and `*_ft_in1k` tags. DINO has no head and in21k's
  has 21,843 classes; `knn` scores those.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from timm.data import resolve_data_config
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from benchmark.backbones.base import BACKBONES, WEIGHTS_ERRORS, Backbone, one_line, register_backbone
from benchmark.backbones.imagenet import imagenet_data, imagenet_root
from benchmark.config import require, require_folder
from benchmark.datasets.imagenet import NUM_CLASSES as IMAGENET_1K_CLASSES
from benchmark.datasets.images import ImageSpec
from benchmark.errors import ConfigError

FEATURED = ("vit_base_patch16_224.dino", "vit_base_patch16_224.augreg_in21k",
            "vit_base_patch16_224.augreg_in21k_ft_in1k")


@dataclass(frozen=True)
class TimmVitParams:
    """Paths default to "" so that a run's identity does not depend on where the files lie."""

    pretrained_file: str = ""  # the weights as a local file (see the module docstring); "" = the Hugging Face hub
    imagenet_dir: str = ""  # ImageNet-1k: train/<wnid>/*.JPEG and val/<wnid>/*.JPEG; "" = <data folder>/imagenet

    def __post_init__(self) -> None:
        require(not self.pretrained_file or Path(self.pretrained_file).is_file(), "pretrained_file",
                'an existing file, or "" for the Hugging Face hub', self.pretrained_file)
        require_folder(self.imagenet_dir, "imagenet_dir")


@functools.lru_cache(maxsize=None)
def is_timm_vit(name: str) -> bool:
    """Whether timm has pretrained weights named `name` for a model of its VisionTransformer class (built on the meta
    device to find out: no memory, no weights)."""
    if name not in timm.list_pretrained(name):
        return False
    try:
        with torch.device("meta"):
            model = timm.create_model(name)
    except (RuntimeError, NotImplementedError):  # a model whose construction needs real tensors is no ViT of ours
        return False
    return type(model) is VisionTransformer


def create_pretrained(name: str, pretrained_file: str) -> nn.Module:
    """`timm.create_model(name, pretrained=True)`, from `pretrained_file` when given; failures are one-line errors
    that say how to get the weights offline."""
    if pretrained_file:
        overlay = dict(file=pretrained_file, custom_load=pretrained_file.endswith(".npz"))
        try:
            return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
        except WEIGHTS_ERRORS as error:
            raise ConfigError(f"backbones.{name}.pretrained_file: cannot load {pretrained_file!r} as the weights of "
                              f"{name} ({one_line(error)})") from None
    try:
        return timm.create_model(name, pretrained=True)
    except WEIGHTS_ERRORS as error:
        hub = timm.models.get_pretrained_cfg(name).hf_hub_id
        raise ConfigError(f"backbones.{name}: cannot fetch its weights from the Hugging Face hub ({one_line(error)}); "
                          f"without network, download model.safetensors of https://huggingface.co/{hub} elsewhere "
                          "and set pretrained_file: <its path>") from None


@BACKBONES.register_family("any pretrained timm VisionTransformer as <architecture>.<tag> (timm.list_pretrained())",
                           is_timm_vit, TimmVitParams)
def timm_vit(name: str, params: TimmVitParams, weights: bool = True) -> Backbone:
    """A pretrained timm ViT with its original head (none for DINO), scored on ImageNet-1k."""
    model = create_pretrained(name, params.pretrained_file) if weights else timm.create_model(name)
    spec = ImageSpec.from_timm(resolve_data_config(model=model))
    return Backbone(name, model.eval(), spec, imagenet_data(imagenet_root(params.imagenet_dir), spec),
                    head_classifies_pretrain_data=model.num_classes == IMAGENET_1K_CLASSES)


for _name in FEATURED:
    register_backbone(_name, TimmVitParams)(functools.partial(timm_vit, _name))
