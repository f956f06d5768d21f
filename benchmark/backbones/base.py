"""What a backbone is: a pre-trained timm ViT with its original head, its input format and its pre-training domain;
and the registry that builds backbones by name.

Every backbone honours timm's model contract (`forward_features`, `forward_head`, `get_classifier`,
`reset_classifier`), which is all the strategies and the retention protocols use. What a retention protocol needs
beyond it, a backbone declares: whether its original head classifies its pre-training eval set (`head`), and CLIP's
text tower (`zeroshot`).
"""

from __future__ import annotations

import functools

import pickle
import zipfile
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from open_clip import build_zero_shot_classifier
from safetensors import SafetensorError
from torch import nn

from benchmark.datasets.images import ImageSpec
from benchmark.evaluation import Images
from benchmark.registry import BuilderRegistry


@dataclass(frozen=True)
class PretrainEvalSet:
    """Images and labels from the pre-training domain (a seeded subset of one split), in the backbone's input
    format: the test split is scored, the train split is the k-NN memory bank. Images are decoded once into one
    float tensor when that takes at most `evaluation.IN_MEMORY_LIMIT_BYTES` (4 bytes x C x H x W each: 602 KB at
    3 x 224 x 224, so about 3,500 ImageNet images), otherwise read from disk on every pass (`evaluation.Images`)."""

    name: str
    images: Images
    labels: torch.Tensor
    class_names: tuple[str, ...]


Template = Callable[[str], str]  # class name -> prompt


@dataclass
class TextTower:
    """CLIP's text side, for zero-shot classification: open_clip's model (only its `encode_text` is used) and
    tokenizer. Class embeddings are computed once per class list and template set and kept: the text tower never
    trains."""

    model: nn.Module
    tokenizer: Callable[[Sequence[str]], torch.Tensor]
    _classifiers: dict[tuple[tuple[str, ...], tuple[Template, ...]], torch.Tensor] = field(default_factory=dict,
                                                                                           repr=False)

    def classifier(self, class_names: Sequence[str], templates: Sequence[Template],
                   device: torch.device) -> torch.Tensor:
        """(embedding dim, classes): each class's normalised mean of its normalised prompt embeddings (open_clip's
        `build_zero_shot_classifier`, fp32), computed on `device`, kept on the CPU."""
        key = (tuple(class_names), tuple(templates))
        if key not in self._classifiers:
            self.model.to(device)
            try:
                self._classifiers[key] = build_zero_shot_classifier(self.model, self.tokenizer, key[0], key[1],
                                                                    device=device).cpu()
            finally:
                self.model.to("cpu")
        return self._classifiers[key]


@dataclass
class Backbone:
    """A pre-trained model (with its pre-training head) and how to evaluate it on its pre-training domain."""

    name: str
    model: nn.Module
    image_spec: ImageSpec
    pretrain_data: Callable[[str, int, int], PretrainEvalSet] = field(repr=False)  # (split, size, seed) -> subset
    head_classifies_pretrain_data: bool = True  # the original head's outputs are pretrain_data's classes, in order
    text_tower: Optional[TextTower] = field(default=None, repr=False)  # CLIP backbones only

    def __post_init__(self) -> None:
        # Each subset is loaded once per process: the suite's preflight and every run of a backbone ask for the same
        # ones (decoding a few thousand ImageNet JPEGs takes tens of seconds). Subsets are never modified.
        self.pretrain_data = functools.lru_cache(maxsize=8)(self.pretrain_data)


BACKBONES = BuilderRegistry("backbone", "backbones")  # name -> (params dataclass, builder(params) -> Backbone)
register_backbone = BACKBONES.register_builder


def backbone_params(name: str, raw: Mapping[str, Any]) -> Any:
    """Validate a backbone's hyper-parameters without loading it."""
    return BACKBONES.params(name, raw)


def build_backbone(name: str, *, weights: bool = True, **raw: Any) -> Backbone:
    """The registered backbone `name`; `weights=False` builds the architecture with random weights and loads
    nothing (`run_suite.py --dry-run` sizes the runs of a config whose weights are not on this machine)."""
    return BACKBONES.builder(name)(BACKBONES.params(name, raw), weights=weights)


# What loading a weights file raises when it is corrupt, of another format or of another architecture (strict
# load_state_dict), or when the hub cannot be reached (huggingface_hub's errors are OSErrors; open_clip wraps its own
# download failures in RuntimeError).
WEIGHTS_ERRORS = (RuntimeError, OSError, KeyError, ValueError, SafetensorError, pickle.UnpicklingError,
                  zipfile.BadZipFile)


def one_line(error: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, shortened: for errors that wrap a library's multi-line message."""
    text = " ".join(str(error).split()) or error.__class__.__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
