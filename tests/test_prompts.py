"""The shared prompt mechanism (strategies/_prompts.py) against hand computations, and what all three prompt methods
must honour: a query from the frozen, prompt-free backbone, backbone weights that never change, no gradient for the
masked logits of earlier tasks, and exact resumption."""

import copy

import pytest
import timm
import torch

from benchmark import costs
from benchmark.runtime import Runtime
from strategies._prompts import PromptedViT, query_training_data
from strategies.base import build_strategy
from strategies.coda_prompt import CODAPrompt
from strategies.dualprompt import DualPrompt
from strategies.l2p import L2P
from test_checkpoints import assert_resuming_changes_nothing, crashing_once

RUNTIME = Runtime.resolve("cpu", "fp32", progress=False)
TWO_BLOCKS = {"l2p": {}, "dualprompt": {"g_blocks": [0], "e_blocks": [1]}, "coda_prompt": {"components_per_task": 2}}
PROMPT_METHODS = tuple(TWO_BLOCKS)


def small_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=28, patch_size=4, in_chans=1,
                              embed_dim=32, depth=2, num_heads=2, num_classes=0)
    return model.eval()


def prompt_strategy(name: str, model: torch.nn.Module, **params):
    torch.manual_seed(0)
    return build_strategy(name, {"epochs": 1, "batch_size": 32, **TWO_BLOCKS[name], **params}, copy.deepcopy(model),
                          RUNTIME)


def hand_attention(attention: torch.nn.Module, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor):
    """Multi-head attention written out: softmax(q [K_p; K]^T / sqrt(d)) [V_p; V], then the output projection."""
    batch, n, dim = x.shape
    heads = attention.num_heads
    d = dim // heads
    q, k, v = (x @ attention.qkv.weight.T + attention.qkv.bias).split(dim, dim=-1)
    k, v = torch.cat([keys.expand(batch, -1, -1), k], 1), torch.cat([values.expand(batch, -1, -1), v], 1)
    outs = []
    for h in range(heads):
        part = slice(h * d, (h + 1) * d)
        weights = torch.softmax(q[..., part] @ k[..., part].transpose(1, 2) / d ** 0.5, dim=-1)
        outs.append(weights @ v[..., part])
    return torch.cat(outs, -1) @ attention.proj.weight.T + attention.proj.bias


def test_a_prefix_joins_the_keys_and_values_of_its_block_only():
    model = small_vit()
    original = copy.deepcopy(model)
    prompted = PromptedViT(model, prefix_blocks=[1])
    x, keys, values = torch.randn(3, 7, 32), torch.randn(4, 32), torch.randn(4, 32)
    attention = model.blocks[1].attn
    with torch.no_grad(), prompted._prefixed({1: (keys, values)}):
        assert torch.allclose(attention(x), hand_attention(attention, x, keys, values), atol=1e-5)
    with torch.no_grad():  # no active prefix: timm's own attention, exactly
        assert torch.equal(attention(x), original.blocks[1].attn(x))
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in original.named_parameters()]


def test_prompt_tokens_follow_the_class_token_with_its_position_embedding():
    model = small_vit()
    prompted = PromptedViT(model)
    images, prompts = torch.randn(2, 1, 28, 28), torch.randn(2, 3, 32)
    with torch.no_grad():
        patches = model.patch_embed(images) + model.pos_embed[:, 1:]
        cls = model.cls_token + model.pos_embed[:, :1]
        sequence = torch.cat([cls.expand(2, -1, -1), prompts + model.pos_embed[:, :1], patches], 1)
        expected = model.norm(model.blocks(sequence))
        assert torch.allclose(prompted.tokens(images, prompts), expected, atol=1e-5)
        assert torch.allclose(prompted.tokens(images), model.forward_features(images), atol=1e-6)


@pytest.mark.parametrize("name", PROMPT_METHODS)
def test_the_query_is_the_frozen_prompt_free_backbone_and_its_weights_never_change(name, backbone, stream):
    model = copy.deepcopy(backbone.model).eval()
    model.reset_classifier(0)
    strategy = prompt_strategy(name, model)
    for task in stream.tasks[:2]:
        strategy.train_task(task)
    strategy.eval()
    images = torch.stack([stream.tasks[0].test[i][0] for i in range(6)])
    with torch.no_grad():
        pretrained = model(images)
        assert torch.allclose(strategy.prompted.query(images), pretrained, atol=1e-6)
        assert not torch.allclose(strategy.features(images), pretrained, atol=1e-3)  # the prompts do act
        data, unpack = query_training_data(strategy.prompted, stream.tasks[0], RUNTIME)
        cached_images, cached_queries = unpack(data.tensors[0][:6])
        first = torch.stack([stream.tasks[0].train[i][0] for i in range(6)])
        assert torch.equal(cached_images, first) and torch.allclose(cached_queries, model(first), atol=1e-6)
    state = strategy.backbone.state_dict()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", PROMPT_METHODS)
def test_the_masked_logits_of_earlier_tasks_get_no_gradient(name, backbone, stream):
    """Cross-entropy over the current task's classes only: the earlier classes' head rows, which only their logits
    reach, are bit-identical after a later task (Adam moves nothing without a gradient)."""
    strategy = prompt_strategy(name, backbone.model)
    strategy.train_task(stream.tasks[0])
    before = strategy.head.weight.detach().clone(), strategy.head.bias.detach().clone()
    strategy.train_task(stream.tasks[1])
    assert torch.equal(strategy.head.weight[:2], before[0]) and torch.equal(strategy.head.bias[:2], before[1])
    assert not torch.equal(strategy.head.weight[2:4], torch.zeros(2, strategy.feature_dim))
    assert strategy.report()["protocol"]["replay_memory"] == "none"


RESUMABLE = {"l2p": crashing_once(L2P, "l2p_crashes_once"),
             "dualprompt": crashing_once(DualPrompt, "dualprompt_crashes_once"),
             "coda_prompt": crashing_once(CODAPrompt, "coda_prompt_crashes_once")}


@pytest.mark.parametrize("name", PROMPT_METHODS)
def test_a_resumed_prompt_run_equals_an_uninterrupted_one(name, write_suite, tmp_path):
    assert_resuming_changes_nothing(f"{name}_crashes_once", RESUMABLE[name], {"epochs": 1, **TWO_BLOCKS[name]},
                                    write_suite, tmp_path)


def test_added_parameters_on_a_vit_b16_are_the_references_pool_keys_and_components():
    """L2P: 10 prompts x 5 tokens x 768 + 10 keys; DualPrompt: G 2 blocks x (5 + 5) x 768, 10 experts x 3 blocks x
    (5 + 5) x 768, 10 keys; CODA-Prompt: per task 10 components x 5 blocks x (8 x 768 + 768 + 768)."""
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    expected = {"l2p": 38_400 + 7_680, "dualprompt": 15_360 + 230_400 + 7_680, "coda_prompt": 384_000}
    for name, count in expected.items():
        strategy = build_strategy(name, {"preset": "reference"}, copy.deepcopy(model), RUNTIME)
        if name == "coda_prompt":
            strategy.add_components()
        assert costs.parameter_counts(strategy)["params_trainable"] == count
        assert costs.parameter_counts(strategy)["params_added"] == count
