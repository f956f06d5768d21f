"""How much of the pre-trained model survives: accuracy on the pre-training domain, by named protocols.

- `head`: the backbone's original classifier on the strategy's current pre-logit features. A strategy that leaves
  the features untouched keeps exactly the backbone's accuracy; one that changes them is scored by how well the old
  head still reads them.
- `knn`: DINO's weighted k-nearest-neighbour classifier (Caron et al., 2021, `eval_knn.py`), as the forgetting
  study measures ImageNet retention of a fine-tuned DINO ViT: L2-normalised features of the adapted backbone for a
  memory bank of pre-training-domain training images and for the eval images; each eval image takes its k most
  cosine-similar bank images, whose labels vote with weight exp(similarity / temperature). No original head needed.
- `zeroshot`: CLIP's zero-shot classifier (Radford et al., 2021; open_clip's `build_zero_shot_classifier`): each
  class embedded by the text tower as the normalised mean of its normalised prompt embeddings (OpenAI's 80 ImageNet
  templates, or one), computed once (the text tower never trains); an image's class is the most cosine-similar one
  to its embedding, the strategy's current features through the backbone's original projection head. CLIP
  backbones only.

A protocol that does not apply to a backbone (`head` without a classifier over the pre-training classes, `zeroshot`
without a text tower) is a configuration error when the run's retention is built, before any training.

A protocol is a builder `(params, backbone, eval_set, runtime) -> score(features)` registered with its
hyper-parameter dataclass, as streams and backbones are, where `features(images)` gives the strategy's current
features of an image set (`evaluation.StrategyFeatures`); a suite may select several, and they share one pass of
the strategy over each image set (and, unchanged networks, passes of earlier evaluations: `benchmark.sharing`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from open_clip import OPENAI_IMAGENET_TEMPLATES
from torch import nn

from benchmark.backbones import Backbone, PretrainEvalSet, Template
from benchmark.config import require
from benchmark.errors import ConfigError
from benchmark.evaluation import StrategyFeatures, predicted_labels
from benchmark.registry import BuilderRegistry
from benchmark.runtime import Runtime

Scorer = Callable[[StrategyFeatures], float]  # a strategy's features of image sets -> retained accuracy (%)
PROTOCOLS = BuilderRegistry("retention protocol", "retention.protocols")
register_protocol = PROTOCOLS.register_builder


@dataclass(frozen=True)
class HeadParams:
    """No hyper-parameters: the backbone's own classifier decides."""


def original_head(backbone: Backbone, runtime: Runtime) -> nn.Module:
    """A frozen copy of the backbone's pre-training classifier (or projection), on the runtime's device."""
    return copy.deepcopy(backbone.model.get_classifier()).to(runtime.device).eval()


@register_protocol("head", HeadParams)
def head_protocol(params: HeadParams, backbone: Backbone, eval_set: PretrainEvalSet, runtime: Runtime) -> Scorer:
    if not backbone.head_classifies_pretrain_data:
        instead = "knn or zeroshot" if backbone.text_tower else "knn"
        raise ConfigError(f"retention.protocols.head: backbone {backbone.name!r} has no classifier over its "
                          f"pre-training classes ({eval_set.name}); use {instead}")
    head = original_head(backbone, runtime)
    outputs = getattr(head, "out_features", 0)
    if outputs != len(eval_set.class_names):
        raise ConfigError(f"retention.protocols.head: the head of {backbone.name!r} predicts {outputs} classes but "
                          f"{eval_set.name} holds {len(eval_set.class_names)}; use the full data set, or knn")

    def score(features: StrategyFeatures) -> float:
        with torch.no_grad(), runtime.autocast():
            predicted = predicted_labels(head(features(eval_set.images))).cpu()
        return percent_correct(predicted, eval_set.labels)

    return score


@dataclass(frozen=True)
class KnnParams:
    k: int = 20  # neighbours that vote (DINO and the study report k = 20)
    temperature: float = 0.07  # votes weigh exp(cosine similarity / temperature)
    bank_size: int = 1000  # pre-training-domain training images in the memory bank (a fixed seeded subset); sized for
    # the mini benchmark: DINO's protocol on ImageNet uses the whole train split, so raise it for the large ones

    def __post_init__(self) -> None:
        require(self.k >= 1, "k", ">= 1", self.k)
        require(self.temperature > 0, "temperature", "> 0", self.temperature)
        require(self.bank_size >= self.k, "bank_size", f">= k ({self.k})", self.bank_size)


def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, k: int, temperature: float,
                num_classes: int) -> torch.Tensor:
    """Class predicted for each query by DINO's weighted k-NN vote; features are L2-normalised here."""
    bank, queries = F.normalize(bank, dim=1), F.normalize(queries, dim=1)
    similarity, neighbours = (queries @ bank.T).topk(k, dim=1)
    votes = torch.zeros(len(queries), num_classes, dtype=similarity.dtype, device=queries.device)
    votes.scatter_add_(1, bank_labels[neighbours], (similarity / temperature).exp())
    return votes.argmax(1)


@register_protocol("knn", KnnParams)
def knn_protocol(params: KnnParams, backbone: Backbone, eval_set: PretrainEvalSet, runtime: Runtime) -> Scorer:
    bank_set = pretrain_subset(backbone, "train", params.bank_size, 0, "retention.protocols.knn.bank_size")
    num_classes = len(eval_set.class_names)

    def score(features: StrategyFeatures) -> float:
        bank = features(bank_set.images)
        predicted = knn_predict(bank, bank_set.labels.to(bank.device), features(eval_set.images), params.k,
                                params.temperature, num_classes)
        return percent_correct(predicted.cpu(), eval_set.labels)

    return score


TEMPLATES: dict[str, tuple[Template, ...]] = {
    "openai": tuple(OPENAI_IMAGENET_TEMPLATES),  # CLIP's 80 ImageNet prompts ("a bad photo of a {c}.", ...)
    "simple": (lambda c: f"a photo of a {c}.",),
}


@dataclass(frozen=True)
class ZeroshotParams:
    templates: str = "openai"  # prompt set: openai (80 prompts, CLIP's ImageNet protocol) or simple (one)

    def __post_init__(self) -> None:
        require(self.templates in TEMPLATES, "templates", f"one of {', '.join(TEMPLATES)}", self.templates)


@register_protocol("zeroshot", ZeroshotParams)
def zeroshot_protocol(params: ZeroshotParams, backbone: Backbone, eval_set: PretrainEvalSet,
                      runtime: Runtime) -> Scorer:
    if backbone.text_tower is None:
        instead = "head or knn" if backbone.head_classifies_pretrain_data else "knn"
        raise ConfigError(f"retention.protocols.zeroshot: backbone {backbone.name!r} has no text tower (CLIP "
                          f"backbones only, e.g. clip-vit-b16); use {instead}")
    classes = backbone.text_tower.classifier(eval_set.class_names, TEMPLATES[params.templates],
                                             runtime.device).to(runtime.device)
    projection = original_head(backbone, runtime)

    def score(features: StrategyFeatures) -> float:
        with torch.no_grad(), runtime.autocast():
            embeddings = projection(features(eval_set.images))
        similarity = F.normalize(embeddings.float(), dim=-1) @ classes
        return percent_correct(predicted_labels(similarity).cpu(), eval_set.labels)

    return score


def percent_correct(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * float((predicted == labels).float().mean())


def pretrain_subset(backbone: Backbone, split: str, size: int, seed: int, key: str) -> PretrainEvalSet:
    """`size` images of the backbone's pre-training `split`; asking for more than the split holds is a ConfigError
    naming `key` (the loaders would silently return all of them, and the run would measure on fewer)."""
    subset = backbone.pretrain_data(split, size, seed)
    if len(subset.labels) < size:
        raise ConfigError(f"{key}: must be at most the {len(subset.labels)} images of {subset.name}, got {size}")
    return subset


def protocol_params(name: str, raw: Mapping[str, Any]) -> Any:
    """Validate a protocol's hyper-parameters without building it."""
    return PROTOCOLS.params(name, raw)


@dataclass
class Retention:
    """A run's retention measurement: the eval set and the selected protocols' scorers."""

    eval_set: PretrainEvalSet
    scorers: dict[str, Scorer]
    runtime: Runtime = field(repr=False)

    def __call__(self, features: StrategyFeatures) -> dict[str, float]:
        """Retained accuracy (%) of the strategy's current network (its `features`) by each protocol, in the
        configured order."""
        return {name: score(features) for name, score in self.scorers.items()}


def build_retention(retention: Mapping[str, Any], backbone: Backbone, runtime: Runtime) -> Retention:
    """The measurement a run's retention settings (`RunSpec.retention`) ask for; loads its data."""
    eval_set = pretrain_subset(backbone, "test", retention["eval_size"], retention["subset_seed"],
                               "retention.eval_size")
    scorers = {name: PROTOCOLS.builder(name)(protocol_params(name, params), backbone, eval_set, runtime)
               for name, params in retention["protocols"].items()}
    return Retention(eval_set, scorers, runtime)
