"""Backbones: pre-trained timm ViTs with their original head, input format and pre-training domain, by name.

- `base.py`: `Backbone`, `PretrainEvalSet`, `TextTower` and the registry `BACKBONES`
- `mini.py`: `vit-mini` (this project's, pre-trained on Fashion-MNIST; weights in the repository)
- `timm_vit.py`: pretrained timm ViTs by timm name (`vit_base_patch16_224.dino`, ...), pre-trained on ImageNet
- `clip.py`: `clip-vit-b16` (open_clip's CLIP image tower as a timm ViT, with its text tower)
- `imagenet.py`: ImageNet-1k as the pre-training domain of the last two (retention set, k-NN bank)

Importing this package registers them.
"""

from benchmark.backbones.base import (BACKBONES, Backbone, PretrainEvalSet, Template, TextTower, backbone_params,
                                      build_backbone, register_backbone)
from benchmark.backbones import clip, mini, timm_vit  # noqa: F401  (registers the backbones)
from benchmark.backbones.mini import VIT_MINI_ARCH, VIT_MINI_CHECKPOINT, VIT_MINI_IMAGE, create_vit_mini, read_card

__all__ = ["BACKBONES", "Backbone", "PretrainEvalSet", "Template", "TextTower", "backbone_params", "build_backbone",
           "register_backbone", "VIT_MINI_ARCH", "VIT_MINI_CHECKPOINT", "VIT_MINI_IMAGE", "create_vit_mini",
           "read_card"]
