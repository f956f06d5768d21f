"""CLIP ViT-B/16 (Radford et al., 2021) with OpenAI's weights, through open_clip: a timm ViT for the strategies and a
text tower for zero-shot retention on ImageNet-1k.

- Image tower: open_clip builds the model and loads its weights (`open_clip.create_model(model, pretrained=<tag or
  file>)`: a download, or `pretrained_file` through the same loader); timm's `checkpoint_filter_fn` converts the
  visual tower's state dict to timm's layout (conv1 -> patch_embed.proj, in_proj -> attn.qkv, ln_post -> norm,
  proj -> head, ...), and timm's CLIP ViT at the same dimensions loads it strictly. Its head is CLIP's projection
  (bias 0), so the timm model's output is open_clip's `encode_image` (tested to 1e-5), strategies adapt ordinary timm
  blocks, and their pre-logit features are the class token after the final norm, as in timm.
- Text tower: open_clip's model (its image tower dropped, not to hold it twice) and tokenizer, for `zeroshot`. The
  original head (`head` protocol) does not classify ImageNet: it projects into CLIP's embedding space.
- Weights: `model: ViT-B-16-quickgelu`, `pretrained: openai`. OpenAI trained with QuickGELU; open_clip's plain
  `ViT-B-16` config uses GELU and, given the `openai` tag, only warns, so that config would not reproduce the
  published model: a tag and a config that disagree on the activation are a config error here. The tag also
  gives the preprocessing (mean/std, bicubic resize of the shorter side, centre crop), kept when the weights come
  from `pretrained_file`. Offline: download `open_clip_pytorch_model.bin` of
  https://huggingface.co/timm/vit_base_patch16_clip_224.openai (what open_clip itself fetches for this tag) and set
  `pretrained_file`.
- `model` may name another plain open_clip ViT config (`open_clip.list_models()`, or one added with
  `open_clip.add_model_config`: the tests use a tiny one); the backbone's name stays `clip-vit-b16`, so use it for
  that only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import open_clip
import timm
from open_clip import CLIPVisionCfg
from timm.models.vision_transformer import checkpoint_filter_fn
from torch import nn

from benchmark.backbones.base import WEIGHTS_ERRORS, Backbone, TextTower, one_line, register_backbone
from benchmark.backbones.imagenet import imagenet_data, imagenet_root
from benchmark.config import require, require_folder
from benchmark.datasets.images import ImageSpec
from benchmark.errors import ConfigError

NAME = "clip-vit-b16"
# Vision-tower options timm's CLIP ViT reproduces only at these values (class-token pooling, LayerNorm before the
# blocks and before pooling, learnable position embedding, no layer scale, plain attention, no timm trunk).
PLAIN_VIT: dict[str, Any] = dict(timm_model_name=None, attentional_pool=False, pool_type="tok", no_ln_pre=False,
                                 final_ln_after_pool=False, pos_embed_type="learnable", ls_init_value=None,
                                 qk_norm=False, scaled_cosine_attn=False, scale_heads=False, scale_attn_inner=False,
                                 scale_attn=False, scale_fc=False, act_kwargs=None, norm_kwargs=None)
CROP_MODES = {"shortest": "center", "squash": "squash"}  # open_clip's eval resize_mode -> timm's crop_mode


@dataclass(frozen=True)
class ClipParams:
    """Paths default to "" so that a run's identity does not depend on where the files lie."""

    model: str = "ViT-B-16-quickgelu"  # open_clip architecture (see the module docstring)
    pretrained: str = "openai"  # open_clip weights tag: which weights, trained with which activation and
    # preprocessing; "" (with pretrained_file only) = none: open_clip's default preprocessing (OpenAI's)
    pretrained_file: str = ""  # the tag's weights as a local file; "" = download them
    imagenet_dir: str = ""  # ImageNet-1k: train/<wnid>/*.JPEG and val/<wnid>/*.JPEG; "" = <data folder>/imagenet

    def __post_init__(self) -> None:
        require(self.model in open_clip.list_models(), "model", "an open_clip model (open_clip.list_models())",
                self.model)
        tags = open_clip.list_pretrained_tags_by_model(self.model)
        require(self.pretrained in tags or (not self.pretrained and bool(self.pretrained_file)), "pretrained",
                f'one of {", ".join(tags) or "(none)"}, or "" with a pretrained_file', self.pretrained)
        require(not self.pretrained_file or Path(self.pretrained_file).is_file(), "pretrained_file",
                'an existing file, or "" to download the weights', self.pretrained_file)
        require_folder(self.imagenet_dir, "imagenet_dir")
        config = open_clip.get_model_config(self.model)
        vision = CLIPVisionCfg(**config["vision_cfg"])
        require(isinstance(vision.layers, int) and all(getattr(vision, k) == v for k, v in PLAIN_VIT.items()),
                "model", "a plain ViT image tower (class token, no layer scale, no timm trunk)", self.model)
        quick_gelu = self.tag_config.get("quick_gelu", False)
        require(not self.pretrained or config.get("quick_gelu", False) == quick_gelu, "model",
                f"the architecture the {self.pretrained!r} weights were trained with "
                f"({'QuickGELU: a -quickgelu config' if quick_gelu else 'GELU: a config without -quickgelu'})",
                self.model)
        require(self.tag_config.get("resize_mode", "shortest") in CROP_MODES, "pretrained",
                f"weights preprocessed by resizing ({', '.join(CROP_MODES)})", self.pretrained)

    @property
    def tag_config(self) -> dict[str, Any]:
        """open_clip's configuration of the weights tag (download locations, activation, preprocessing)."""
        return open_clip.get_pretrained_cfg(self.model, self.pretrained) if self.pretrained else {}


def load_open_clip(params: ClipParams, weights: bool = True) -> nn.Module:
    """open_clip's model with its weights (the tag's download, or `pretrained_file` with the tag's preprocessing);
    without `weights`, randomly initialised."""
    if not weights:
        return open_clip.create_model(params.model, force_preprocess_cfg=params.tag_config).eval()
    try:
        return open_clip.create_model(params.model, pretrained=params.pretrained_file or params.pretrained,
                                      force_preprocess_cfg=params.tag_config, require_pretrained=True).eval()
    except WEIGHTS_ERRORS as error:
        if params.pretrained_file:
            raise ConfigError(f"backbones.{NAME}.pretrained_file: cannot load {params.pretrained_file!r} as "
                              f"{params.model} weights ({one_line(error)})") from None
        raise ConfigError(f"backbones.{NAME}: cannot download open_clip's {params.model} {params.pretrained!r} "
                          f"weights ({one_line(error)}); without network, download them elsewhere (for openai: "
                          "open_clip_pytorch_model.bin of https://huggingface.co/timm/vit_base_patch16_clip_224.openai)"
                          " and set pretrained_file: <its path>") from None


def timm_vit_args(config: Mapping[str, Any]) -> dict[str, Any]:
    """timm VisionTransformer arguments for an open_clip model config's image tower, projection as the head."""
    vision = CLIPVisionCfg(**config["vision_cfg"])
    return dict(img_size=vision.image_size, patch_size=vision.patch_size, embed_dim=vision.width,
                depth=vision.layers, num_heads=vision.width // vision.head_width, mlp_ratio=vision.mlp_ratio,
                act_layer="quick_gelu" if config.get("quick_gelu", False) else "gelu",
                num_classes=config["embed_dim"])


def timm_image_tower(clip: nn.Module, model_name: str) -> nn.Module:
    """A timm CLIP ViT (pre-norm, LayerNorm eps 1e-5) at the open_clip config's dimensions, holding `clip`'s visual
    weights (strict load: a tower the conversion does not cover fails here)."""
    model = timm.create_model("vit_base_patch16_clip_224", pretrained=False,
                              **timm_vit_args(open_clip.get_model_config(model_name)))
    try:
        model.load_state_dict(checkpoint_filter_fn(clip.state_dict(), model))
    except RuntimeError as error:
        raise ConfigError(f"backbones.{NAME}.model: timm's conversion does not fit {model_name}'s image tower "
                          f"({one_line(error)})") from None
    return model.eval()


def clip_image_spec(clip: nn.Module) -> ImageSpec:
    """The input format open_clip preprocesses with (its eval transform is timm's with crop_pct 1)."""
    preprocess = open_clip.get_model_preprocess_cfg(clip)
    size = preprocess["size"]
    height, width = (size, size) if isinstance(size, int) else size
    return ImageSpec((3, height, width), tuple(preprocess["mean"]), tuple(preprocess["std"]),
                     preprocess["interpolation"], crop_pct=1.0, crop_mode=CROP_MODES[preprocess["resize_mode"]])


@register_backbone(NAME, ClipParams)
def clip_vit_b16(params: ClipParams, weights: bool = True) -> Backbone:
    """CLIP's image tower as a timm ViT, its text tower for zero-shot classification, scored on ImageNet-1k."""
    clip = load_open_clip(params, weights)
    model = timm_image_tower(clip, params.model)
    spec = clip_image_spec(clip)
    clip.visual = None  # the timm model is the image tower now
    return Backbone(NAME, model, spec, imagenet_data(imagenet_root(params.imagenet_dir), spec),
                    head_classifies_pretrain_data=False,
                    text_tower=TextTower(clip, open_clip.get_tokenizer(params.model)))
