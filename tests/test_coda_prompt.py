"""CODA-Prompt's mechanisms against hand computations: the component weights alpha = cos(q * A, K), the weighted sum
of components, Gram-Schmidt initialisation of a new task's components, and old components, keys and attention
vectors that stay bit-identical while a later task trains."""

import copy

import numpy as np
import torch

from benchmark.config import config_dict
from benchmark.runtime import Runtime
from strategies.base import build_strategy, strategy_config
from strategies.coda_prompt import component_weights, gram_schmidt
from test_prompts import small_vit

RUNTIME = Runtime.resolve("cpu", "fp32", progress=False)


def coda(model: torch.nn.Module, **params):
    torch.manual_seed(0)
    return build_strategy("coda_prompt", {"epochs": 1, "components_per_task": 3, **params}, copy.deepcopy(model),
                          RUNTIME)


def test_presets():
    reference = strategy_config("coda_prompt", {"preset": "reference"})
    assert (reference.epochs, reference.batch_size, reference.lr, reference.schedule) == (20, 128, 0.001, "coda-cosine")
    assert (reference.blocks, reference.prompt_length, reference.components_per_task) == ((0, 1, 2, 3, 4), 8, 10)
    assert strategy_config("coda_prompt", {"preset": "reference-imagenet-r"}).epochs == 50
    assert strategy_config("coda_prompt", config_dict(reference)) == reference


def test_the_weights_are_the_cosine_of_the_attended_query_and_the_key():
    query = torch.tensor([[1.0, 2.0]])
    attention = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 3.0]])
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    # q * A = (1, 0), (1, 2), (0, 6); their cosines with the keys: 1, 2 / sqrt 5, -1 / sqrt 2
    expected = [1.0, 2 / np.sqrt(5), -1 / np.sqrt(2)]
    assert np.allclose(component_weights(query, keys, attention)[0].numpy(), expected, atol=1e-6)


def test_the_prefix_is_the_alpha_weighted_sum_of_the_components():
    strategy = coda(small_vit(), components_per_task=2)
    strategy.add_components()
    query = torch.randn(3, 32)
    with torch.no_grad():
        prefixes = strategy.prefixes(query)
        for i, block in enumerate(strategy.blocks):
            alpha = component_weights(query, strategy.keys[i], strategy.attention[i])  # (3, 2)
            mixed = alpha[:, 0, None, None] * strategy.prompts[i, 0] + alpha[:, 1, None, None] * strategy.prompts[i, 1]
            assert torch.allclose(prefixes[block][0], mixed[:, :4], atol=1e-6)  # 8 tokens: 4 keys, then 4 values
            assert torch.allclose(prefixes[block][1], mixed[:, 4:], atol=1e-6)


def test_gram_schmidt_draws_unit_vectors_orthogonal_to_the_old_ones_and_each_other():
    old = torch.eye(5)[:2]  # e1, e2
    new = gram_schmidt(old, 3)
    assert torch.allclose(new[:, :2], torch.zeros(3, 2), atol=1e-6)  # orthogonal to e1 and e2: no component there
    assert torch.allclose(new @ new.T, torch.eye(3), atol=1e-6)
    prompts = gram_schmidt(torch.zeros(0, 4, 6), 4)  # (components, tokens, dim) flattened over tokens
    flat = prompts.flatten(1)
    assert prompts.shape == (4, 4, 6) and torch.allclose(flat @ flat.T, torch.eye(4), atol=1e-6)


def test_old_components_keys_and_attention_vectors_stay_bit_identical(backbone, stream):
    strategy = coda(backbone.model)
    strategy.train_task(stream.tasks[0])
    first = {name: getattr(strategy, name).detach().clone() for name in ("prompts", "keys", "attention")}
    strategy.train_task(stream.tasks[1])
    for name, trained in first.items():
        assert torch.equal(getattr(strategy, f"old_{name}"), trained)
        assert getattr(strategy, name).shape[1] == 3 and getattr(strategy, name).requires_grad
    new_keys = strategy.keys.detach()
    assert strategy.components == 6 and not torch.equal(new_keys, first["keys"])
    strategy.eval()
    images = torch.stack([stream.tasks[1].test[i][0] for i in range(4)])
    with torch.no_grad():
        alpha = strategy.weights(strategy.prompted.query(images)).mean(0)
        expected = alpha.reshape(4, 2, 3).sum(2).argmax(1)
        assert torch.equal(strategy.selected_task(images), expected)
