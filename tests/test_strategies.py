"""Every registered strategy honours the contract on a tiny ViT: trains, predicts the seen classes, leaves frozen
weights alone, starts from the pre-trained features, and reports costs."""

import copy

import pytest
import torch

from benchmark import costs
from benchmark.evaluation import as_tensors
from benchmark.runtime import Runtime
from conftest import builtin_strategies
from strategies.base import build_strategy

RUNTIME = Runtime.resolve("cpu", "fp32", progress=False)


FITS_TWO_BLOCKS = {"topk": {"k": 1}, "dualprompt": {"g_blocks": [0], "e_blocks": [1]}}  # defaults need more blocks
TRAINING_FREE = {"simplecil"}  # no hyper-parameters and nothing trainable


@pytest.mark.parametrize("name", builtin_strategies())
def test_strategy_contract(name, backbone, stream):
    torch.manual_seed(0)
    params = {} if name in TRAINING_FREE else {"epochs": 1, **FITS_TWO_BLOCKS.get(name, {})}
    strategy = build_strategy(name, params, copy.deepcopy(backbone.model), RUNTIME)
    images, _ = as_tensors(stream.tasks[0].test)

    pretrained_features = backbone.model.forward_head(backbone.model.forward_features(images[:8]), pre_logits=True)
    strategy.eval()
    assert torch.allclose(strategy.features(images[:8]), pretrained_features, atol=1e-5)

    frozen = {n: p.detach().clone() for n, p in strategy.named_parameters() if not p.requires_grad}
    for task in stream.tasks[:2]:
        strategy.train_task(task)
        strategy.eval()
        with torch.no_grad():
            assert strategy.predict(images[:8]).shape == (8, task.num_outputs)
    assert all(torch.equal(p, frozen[n]) for n, p in strategy.named_parameters() if n in frozen)

    counts = costs.parameter_counts(strategy)
    assert (name not in TRAINING_FREE) <= counts["params_trainable"] <= counts["params_total"]
    assert counts["params_added"] >= backbone.model.num_features * 4 + 4  # at least the 4-class head
    assert costs.flops_per_image(strategy, images[0]) > 0


def test_linear_keeps_backbone_and_full_ft_moves_it(backbone, stream):
    backbone_state = {k: v.clone() for k, v in backbone.model.state_dict().items() if not k.startswith("head")}
    moved = {}
    for name in ("linear", "full_ft"):
        torch.manual_seed(0)
        strategy = build_strategy(name, {"epochs": 1}, copy.deepcopy(backbone.model), RUNTIME)
        strategy.train_task(stream.tasks[0])
        state = strategy.backbone.state_dict()
        moved[name] = any(not torch.equal(state[k], v) for k, v in backbone_state.items())
        counts = costs.parameter_counts(strategy)
        head = backbone.model.num_features * 2 + 2
        expected_trainable = head if name == "linear" else counts["params_total"]
        assert counts["params_trainable"] == expected_trainable and counts["params_added"] == head
    assert moved == {"linear": False, "full_ft": True}
