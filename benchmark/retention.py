"""How much of the pre-trained model survives: accuracy on the pre-training domain, by a named protocol.

`head`: the backbone's original classifier on the strategy's current pre-logit features. A strategy that leaves the
features untouched keeps exactly the backbone's accuracy; one that changes them is scored by how well the old
head still reads them. Other protocols (k-NN, CLIP zero-shot) register here.
"""

from __future__ import annotations

import copy
from typing import Callable

from torch import nn

from benchmark.backbones import Backbone, PretrainEvalSet
from benchmark.evaluation import accuracy
from benchmark.registry import Registry
from benchmark.runtime import Runtime
from strategies.base import Strategy

Scorer = Callable[[Strategy], float]  # strategy -> retained pre-training accuracy (%)
PROTOCOLS: Registry[Callable[[Backbone, PretrainEvalSet, Runtime], Scorer]] = Registry("retention protocol")


@PROTOCOLS.register("head")
def head_protocol(backbone: Backbone, eval_set: PretrainEvalSet, runtime: Runtime) -> Scorer:
    head: nn.Module = copy.deepcopy(backbone.model.get_classifier()).to(runtime.device).eval()

    def score(strategy: Strategy) -> float:
        return accuracy(lambda x: head(strategy.features(x)), eval_set.images, eval_set.labels, runtime)

    return score
