"""Top-k, LoRA and block expansion: the forgetting study's trainable-parameter table on a ViT-B/16, merged LoRA and
zero-initialised expansion computing what the unmerged / original network computes, and the frozen-prefix cache
giving the same training as running the prefix every step."""

import copy
import dataclasses

import pytest
import timm
import torch
from torch.utils.data import TensorDataset

from benchmark import costs
from benchmark.evaluation import as_tensors
from benchmark.runtime import Runtime
from benchmark.streams import Task
from strategies._lora import LoRALinear
from strategies.base import build_strategy

RUNTIME = Runtime.resolve("cpu", "fp32", progress=False)

# Bafghi et al. (2024), ViT-B/16 with a 100-class head. The paper prints 301K / 448K / 743K for LoRA because its
# code counted the head twice (peft 0.3.0's modules_to_save); these are the parameters that really train.
VIT_B_TABLE = [
    ("full_ft", {}, 85_875_556),
    ("linear", {}, 76_900),
    ("topk", {"k": 3}, 21_342_052),
    ("lora", {"rank": 4}, 224_356),
    ("lora", {"rank": 8}, 371_812),
    ("lora", {"rank": 16}, 666_724),
    ("block_expansion", {"p": 1}, 7_164_772),
    ("block_expansion", {"p": 2}, 14_252_644),
    ("block_expansion", {"p": 3}, 21_340_516),
    ("block_expansion", {"p": 4}, 28_428_388),
]


@pytest.fixture(scope="module")
def vit_b() -> torch.nn.Module:
    """timm's vit_base_patch16_224, randomly initialised (no download)."""
    torch.manual_seed(0)
    return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=1000)


@pytest.mark.parametrize("name, params, trainable", VIT_B_TABLE, ids=[f"{n}{p}" for n, p, _ in VIT_B_TABLE])
def test_trainable_parameters_match_the_study_on_vit_b(vit_b, name, params, trainable):
    one_image = TensorDataset(torch.randn(1, 3, 224, 224), torch.zeros(1, dtype=torch.long))
    task = Task(0, "100 classes", tuple(range(100)), tuple(range(100)), 100, one_image, one_image)
    strategy = build_strategy(name, {"epochs": 1, **params}, copy.deepcopy(vit_b), RUNTIME)
    strategy.train_task(task)  # one step: the head grows to 100 classes
    counts = costs.parameter_counts(strategy)
    assert counts["params_trainable"] == trainable
    assert counts["params_added"] == (76_900 if name in ("full_ft", "linear", "topk") else trainable)


def pre_logits(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model.forward_head(model.forward_features(images), pre_logits=True)


def test_zero_initialised_expansion_computes_the_original_network(backbone, stream):
    images, _ = as_tensors(stream.tasks[0].test)
    for p in (1, 2):
        strategy = build_strategy("block_expansion", {"p": p}, copy.deepcopy(backbone.model), RUNTIME).eval()
        assert len(strategy.backbone.blocks) == 2 + p
        with torch.no_grad():
            assert torch.allclose(strategy.features(images), pre_logits(backbone.model, images), atol=1e-5)


def test_expansion_inserts_a_copy_after_every_group_and_trains_only_the_copies(backbone, stream):
    strategy = build_strategy("block_expansion", {"p": 2, "epochs": 1}, copy.deepcopy(backbone.model), RUNTIME)
    blocks = strategy.backbone.blocks
    originals = backbone.model.blocks
    assert [b.norm1.weight.requires_grad for b in blocks] == [False, True, False, True]
    assert torch.equal(blocks[1].attn.qkv.weight, originals[0].attn.qkv.weight)  # a copy of the block before it
    assert not blocks[1].mlp.fc2.weight.any() and not blocks[1].attn.proj.bias.any()
    strategy.train_task(stream.tasks[0])
    assert blocks[1].mlp.fc2.weight.any() and blocks[3].attn.proj.weight.any()  # the new blocks learned
    for position, original in ((0, originals[0]), (2, originals[1])):
        assert all(torch.equal(a, b) for a, b in zip(blocks[position].parameters(), original.parameters()))


def test_merged_lora_gives_the_logits_of_the_unmerged_adapters(backbone, stream):
    torch.manual_seed(0)
    strategy = build_strategy("lora", {"epochs": 2, "rank": 4, "lr": 1e-2, "targets": ["q", "v", "fc2"]},
                              copy.deepcopy(backbone.model), RUNTIME)
    strategy.train_task(stream.tasks[0])
    adapted = [m for m in strategy.modules() if isinstance(m, LoRALinear)]
    assert len(adapted) == 4 and all(a.B.abs().sum() > 0 for m in adapted for a in m.adapters.values())
    images, _ = as_tensors(stream.tasks[0].test)
    with torch.no_grad():
        strategy.train()  # the unmerged path: W0 x + B A x
        unmerged = strategy.predict(images)
        strategy.eval()  # the merged path: (W0 + B A) x
        merged = strategy.predict(images)
    assert not torch.allclose(merged, build_strategy("linear", {}, copy.deepcopy(backbone.model), RUNTIME).features(
        images) @ strategy.head.weight.T + strategy.head.bias, atol=1e-3)  # the adapters do change the output
    assert torch.allclose(merged, unmerged, atol=1e-5)


def test_lora_adapts_only_the_query_and_value_rows_of_qkv(backbone, stream):
    strategy = build_strategy("lora", {"epochs": 1, "rank": 2, "lr": 1e-2}, copy.deepcopy(backbone.model), RUNTIME)
    strategy.train_task(stream.tasks[0])
    width = backbone.model.embed_dim
    for block, original in zip(strategy.backbone.blocks, backbone.model.blocks):
        delta = block.attn.qkv.merged_weight() - original.attn.qkv.weight
        assert delta[:width].abs().sum() > 0 and delta[2 * width:].abs().sum() > 0  # query and value moved
        assert not delta[width: 2 * width].any()  # the key did not
        assert torch.equal(block.attn.qkv.weight, original.attn.qkv.weight)  # W0 itself stays frozen


def test_cached_frozen_prefix_trains_like_running_it_every_step(backbone, stream):
    """Top-k with k=1 on 2 blocks: block 0 is the frozen prefix, cached without augmentation."""
    trained = []
    for augmented in (False, True):  # True: the prefix runs on every batch, as it must with random transforms
        torch.manual_seed(0)
        strategy = build_strategy("topk", {"k": 1, "epochs": 2}, copy.deepcopy(backbone.model), RUNTIME)
        strategy.train_task(dataclasses.replace(stream.tasks[0], train_augmented=augmented))
        trained.append(strategy.state_dict())
    assert trained[0].keys() == trained[1].keys()
    assert all(torch.allclose(trained[0][k], trained[1][k], atol=1e-5) for k in trained[0])
    assert not torch.equal(trained[0]["backbone.blocks.1.mlp.fc1.weight"], backbone.model.blocks[1].mlp.fc1.weight)


def test_adapted_parameters_keep_training_task_after_task(backbone, stream):
    strategy = build_strategy("lora", {"epochs": 1, "lr": 1e-2}, copy.deepcopy(backbone.model), RUNTIME)
    snapshots = []
    for task in stream.tasks[:2]:
        strategy.train_task(task)
        snapshots.append(strategy.backbone.blocks[0].attn.qkv.adapters["q"].B.detach().clone())
    assert not torch.equal(snapshots[0], snapshots[1]) and strategy.head.num_outputs == 4
