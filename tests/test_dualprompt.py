"""DualPrompt's mechanisms: the general prefix in its blocks and the experts' in theirs, training that moves only
the task's own expert and key, selection by key at test time, and the presets."""

import copy

import numpy as np
import torch

from benchmark.config import config_dict
from benchmark.runtime import Runtime
from strategies.base import build_strategy, strategy_config
from test_l2p import numpy_cosine
from test_prompts import small_vit

RUNTIME = Runtime.resolve("cpu", "fp32", progress=False)
TWO_BLOCKS = {"g_blocks": [0], "e_blocks": [1]}


def dualprompt(model: torch.nn.Module, **params):
    torch.manual_seed(0)
    return build_strategy("dualprompt", {"epochs": 1, **TWO_BLOCKS, **params}, copy.deepcopy(model), RUNTIME)


def test_presets_and_the_default_blocks():
    reference = strategy_config("dualprompt", {"preset": "reference"})
    assert (reference.epochs, reference.batch_size, reference.lr, reference.pull) == (5, 24, 0.001, 0.1)
    assert (reference.g_blocks, reference.e_blocks, reference.g_length, reference.e_length) == ((0, 1), (2, 3, 4), 5, 5)
    assert strategy_config("dualprompt", {"preset": "reference-imagenet-r"}).epochs == 10
    assert strategy_config("dualprompt", config_dict(reference)) == reference


def test_training_moves_the_general_prompt_and_only_the_tasks_own_expert_and_key(backbone, stream):
    strategy = dualprompt(backbone.model, pool_size=4)
    strategy.train_task(stream.tasks[0])
    experts, keys, general = (t.detach().clone() for t in (strategy.e_prompts, strategy.keys, strategy.g_prompt))
    strategy.train_task(stream.tasks[1])
    others = [0, 2, 3]
    assert torch.equal(strategy.e_prompts[others], experts[others]) and torch.equal(strategy.keys[others], keys[others])
    assert not torch.equal(strategy.e_prompts[1], experts[0])  # expert 1 started as expert 0, then trained
    assert not torch.equal(strategy.keys[1], keys[1]) and not torch.equal(strategy.g_prompt, general)


def test_inference_takes_the_expert_with_the_most_similar_key():
    strategy = dualprompt(small_vit(), pool_size=5).eval()
    strategy.head.grow(3)
    images = torch.randn(6, 1, 28, 28)
    with torch.no_grad():
        query = strategy.prompted.query(images)
        expected = np.argmax(numpy_cosine(query.numpy(), strategy.keys.numpy()), axis=1)
        assert strategy.selected_task(images).tolist() == expected.tolist()
        for i, expert in enumerate(expected):
            alone = strategy.logits(images[i: i + 1], strategy.e_prompts[int(expert)])
            assert torch.allclose(strategy.predict(images)[i], alone[0], atol=1e-5)


def test_the_prefixes_sit_in_their_blocks():
    strategy = dualprompt(small_vit(), pool_size=3)
    expert = strategy.e_prompts[2]
    prefixes = strategy.prefixes(expert)
    assert sorted(prefixes) == [0, 1]
    assert torch.equal(prefixes[0][0], strategy.g_prompt[0, 0]) and torch.equal(prefixes[0][1], strategy.g_prompt[0, 1])
    assert torch.equal(prefixes[1][0], expert[0, 0]) and torch.equal(prefixes[1][1], expert[0, 1])
