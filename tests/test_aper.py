"""APER: the first-session module (each `petl`) trains on the first task only (bit-identical afterwards), and its
prototypes are class means of [pre-trained features, adapted features], the first half computed here by an untouched
copy of the backbone."""

import copy

import pytest
import torch

from benchmark import costs
from benchmark.evaluation import as_tensors
from benchmark.runtime import Runtime
from strategies.base import build_strategy
from test_prototypes import pretrained_features

RUNTIME = Runtime.resolve("cpu", "fp32", progress=False)


def module_state(strategy) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in strategy.first_session.named_parameters()}


@pytest.mark.parametrize("petl", ["adapter", "ssf", "vpt_shallow", "vpt_deep", "finetune"])
def test_the_module_trains_on_the_first_task_only_and_prototypes_concatenate(petl, backbone, stream):
    torch.manual_seed(0)
    strategy = build_strategy("aper", {"petl": petl, "epochs": 1, "lr": 0.1, "batch_size": 16},
                              copy.deepcopy(backbone.model), RUNTIME)
    initial = module_state(strategy)
    strategy.train_task(stream.tasks[0])
    after_first = module_state(strategy)
    assert any(not torch.equal(after_first[n], initial[n]) for n in initial)  # the first task trained them
    strategy.train_task(stream.tasks[1])
    assert all(torch.equal(p, after_first[n]) for n, p in module_state(strategy).items())  # then never again

    images, labels = zip(*(as_tensors(task.train_unaugmented) for task in stream.tasks[:2]))
    images, labels = torch.cat(images), torch.cat(labels)
    strategy.eval()
    with torch.no_grad():
        adapted = strategy.features(images).double()
    frozen = torch.from_numpy(pretrained_features(backbone, images))
    assert not torch.allclose(adapted, frozen, atol=1e-4)  # the two halves differ
    concatenated = torch.cat([frozen, adapted], dim=1)
    expected = torch.stack([concatenated[labels == c].mean(0) for c in range(4)])
    assert strategy.prototypes.means.shape == (4, 2 * backbone.model.num_features)
    assert torch.allclose(strategy.prototypes.means, expected, rtol=1e-5, atol=1e-5)


def test_aper_costs_two_forward_passes(backbone, stream):
    image = as_tensors(stream.tasks[0].test)[0][0]
    flops = {}
    for name, params in (("simplecil", {}), ("aper", {"epochs": 1})):
        strategy = build_strategy(name, params, copy.deepcopy(backbone.model), RUNTIME)
        strategy.train_task(stream.tasks[0])
        flops[name] = costs.flops_per_image(strategy, image)
    model, classes = backbone.model, stream.tasks[0].num_outputs
    d, tokens = model.num_features, model.patch_embed.num_patches + model.num_prefix_tokens
    one_pass = flops["simplecil"] - 2 * d * classes  # SimpleCIL: one pass and a d-dim cosine head
    adapters = len(model.blocks) * 2 * (2 * tokens * d * 64)  # down and up projection, bottleneck 64, every block
    assert flops["aper"] == 2 * one_pass + adapters + 2 * (2 * d) * classes  # two passes, a 2d-dim cosine head
