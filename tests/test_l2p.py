"""L2P's mechanisms against hand computations: top-N selection by cosine similarity, the key-pull term, per-image
against per-batch selection, the prompt tokens the head reads, and the presets."""

import copy

import numpy as np
import torch

from benchmark.config import config_dict
from benchmark.runtime import Runtime
from strategies._prompts import key_pull
from strategies.base import build_strategy, strategy_config
from test_prompts import small_vit

RUNTIME = Runtime.resolve("cpu", "fp32", progress=False)


def l2p(model: torch.nn.Module, **params):
    torch.manual_seed(0)
    return build_strategy("l2p", {"epochs": 1, **params}, copy.deepcopy(model), RUNTIME)


def numpy_cosine(query: np.ndarray, keys: np.ndarray) -> np.ndarray:
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    k = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    return q @ k.T


def test_presets_fill_only_what_the_user_left_out():
    reference = strategy_config("l2p", {"preset": "reference"})
    assert (reference.epochs, reference.batch_size, reference.lr, reference.schedule) == (5, 16, 0.001875, "constant")
    assert (reference.pool_size, reference.prompt_length, reference.top_n, reference.pull) == (10, 5, 5, 0.1)
    imagenet_r = strategy_config("l2p", {"preset": "reference-imagenet-r", "selection": "batch"})
    assert (imagenet_r.epochs, imagenet_r.batch_size, imagenet_r.selection) == (10, 32, "batch")
    assert strategy_config("l2p", config_dict(imagenet_r)) == imagenet_r


def test_each_image_takes_the_top_n_prompts_by_cosine_similarity():
    strategy = l2p(small_vit(), top_n=3)
    query = torch.randn(6, 32)
    similarity = numpy_cosine(query.numpy(), strategy.keys.detach().numpy())
    expected = np.argsort(-similarity, axis=1)[:, :3]
    assert np.array_equal(strategy.selected(query).numpy(), expected)


def test_the_key_pull_term_is_the_mean_over_images_of_the_summed_cosines_of_the_selected_keys():
    query, keys = torch.randn(4, 8), torch.randn(5, 8)
    selected = torch.tensor([[0, 1], [2, 3], [4, 0], [1, 1]])
    cos = numpy_cosine(query.numpy(), keys.numpy())
    expected = sum(cos[b, k] for b in range(4) for k in selected[b].tolist()) / 4
    assert np.isclose(float(key_pull(query, keys, selected)), expected, atol=1e-6)


def test_the_head_reads_the_mean_output_of_the_selected_prompt_tokens():
    strategy = l2p(small_vit(), top_n=2, prompt_length=3)
    strategy.head.grow(4)
    images = torch.randn(2, 1, 28, 28)
    chosen = torch.tensor([[4, 1], [0, 7]])
    with torch.no_grad():
        tokens = strategy.prompted.tokens(images, strategy.prompts[chosen].reshape(2, 6, 32))
        expected = tokens[:, 1:7].mean(1) @ strategy.head.weight.T + strategy.head.bias
        assert torch.allclose(strategy.logits(images, chosen), expected, atol=1e-6)


def keys_at_the_queries_of(strategy, images: torch.Tensor) -> None:
    """Key i := the query of image i, so that every image's most similar key is its own."""
    with torch.no_grad():
        strategy.keys[: len(images)] = strategy.prompted.query(images)


def test_batch_selection_makes_a_prediction_depend_on_the_batch_and_image_selection_does_not():
    model = small_vit()
    images = torch.randn(4, 1, 28, 28)
    own = images[:1]
    alone, crowded = own, torch.cat([own, images[1:2].expand(3, -1, -1, -1)])  # image 0, or image 0 among three 1s
    predictions = {}
    for mode in ("image", "batch"):
        strategy = l2p(model, pool_size=4, top_n=1, selection=mode).eval()
        strategy.head.grow(3)
        keys_at_the_queries_of(strategy, images)
        with torch.no_grad():
            predictions[mode] = strategy.predict(alone)[0], strategy.predict(crowded)[0]
            assert strategy.selected(strategy.prompted.query(crowded))[0].tolist() == ([0] if mode == "image" else [1])
    assert torch.allclose(*predictions["image"], atol=1e-6)
    assert not torch.allclose(*predictions["batch"], atol=1e-3)
    assert torch.allclose(predictions["image"][0], predictions["batch"][0], atol=1e-6)  # alone: the same prompt


def test_a_prompt_belongs_to_the_task_that_selected_it_most(backbone, stream):
    strategy = l2p(backbone.model, pool_size=4, top_n=1)
    for task in stream.tasks[:2]:
        strategy.train_task(task)
    selections = strategy.selections
    assert selections.shape == (2, 4) and selections.sum(dim=1).tolist() == [len(t.train) for t in stream.tasks[:2]]
    strategy.eval()
    images = torch.stack([stream.tasks[1].test[i][0] for i in range(5)])
    with torch.no_grad():
        first = strategy.selected(strategy.prompted.query(images))[:, 0]
        owner = [int(np.argmax(selections[:, p].numpy())) for p in first.tolist()]
        assert strategy.selected_task(images).tolist() == owner
