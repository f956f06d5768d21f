"""LAE's mechanisms: PETs in blocks 0-4 only, their functions and parameter counts (on a ViT-B/16), warm-up epochs
that leave them alone, offline PETs that are the EMA of the online ones, the max-of-softmax ensemble, and exact
resumption."""

import copy

import pytest
import timm
import torch
import torch.nn.functional as F

from benchmark import costs
from benchmark.config import config_dict
from benchmark.runtime import Runtime
from benchmark.streams import build_stream
from strategies.base import build_strategy, strategy_config
from strategies.lae import LAE, KVLoRA, Prefix, max_softmax
from test_checkpoints import assert_resuming_changes_nothing, crashing_once

RUNTIME = Runtime.resolve("cpu", "fp32", progress=False)
FAST = {"epochs": 2, "batch_size": 32, "freeze_ratio": 0.5}  # one warm-up epoch, one with the PETs training
KINDS = ("adapter", "lora", "prefix")


def lae(model: torch.nn.Module, **params) -> LAE:
    torch.manual_seed(0)
    return build_strategy("lae", {**FAST, **params}, copy.deepcopy(model), RUNTIME)


def small_vit(depth: int) -> torch.nn.Module:
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=28, patch_size=4, in_chans=1,
                             embed_dim=32, depth=depth, num_heads=2, num_classes=10)


def test_presets_fill_only_what_the_user_left_out():
    reference = strategy_config("lae", {"preset": "reference"})
    assert (reference.epochs, reference.freeze_epochs, reference.batch_size, reference.lr) == (5, 3, 24, 0.0028125)
    assert reference.ema_decay == 0.9999 and reference.pet == "adapter"
    imagenet_r = strategy_config("lae", {"preset": "reference-imagenet-r", "pet": "lora"})
    assert (imagenet_r.epochs, imagenet_r.freeze_epochs, imagenet_r.lr) == (50, 30, 0.00046875)
    assert strategy_config("lae", config_dict(imagenet_r)) == imagenet_r  # a recorded config rebuilds itself


@pytest.mark.parametrize("kind", KINDS)
def test_pets_change_blocks_0_to_4_only(kind):
    model = small_vit(depth=7).eval()
    strategy = lae(model, pet=kind)
    assert len(strategy.online) == 5
    with torch.no_grad():
        for parameter in strategy.online.parameters():  # adapters and LoRA start as no-ops: make them act
            parameter.normal_()
    tokens = torch.randn(2, 50, 32)
    with torch.no_grad():
        changed = [not torch.allclose(adapted(tokens), original(tokens))
                   for adapted, original in zip(strategy.backbone.blocks, model.blocks)]
    assert changed == [True] * 5 + [False] * 2
    assert [n for n, _ in strategy.backbone.named_parameters()] == [n for n, _ in model.named_parameters()
                                                                   if not n.startswith("head.")]


@pytest.mark.parametrize("kind, per_copy", [
    ("adapter", 42_270),  # 5 blocks x (down 768*5 + 5, up 5*768 + 768, scale 1)
    ("lora", 76_810),  # 5 blocks x 2 (keys, values) x (A 5*768 + B 768*5 + scale 1)
    ("prefix", 76_810),  # 5 blocks x (keys 10*768 + values 10*768 + 2 scales)
])
def test_online_pets_on_a_vit_b16_have_the_reference_size(kind, per_copy):
    strategy = build_strategy("lae", {"pet": kind}, timm.create_model("vit_base_patch16_224"), RUNTIME)
    counts = costs.parameter_counts(strategy)
    assert counts["params_trainable"] == sum(p.numel() for p in strategy.online.parameters()) == per_copy
    assert counts["params_added"] == 2 * per_copy + 1  # online, offline (EMA) copy, the task counter


def test_lora_updates_keys_and_values_with_learnable_scales():
    torch.manual_seed(0)
    qkv, lora = torch.nn.Linear(8, 24), KVLoRA(8, 8, rank=2)
    with torch.no_grad():
        lora.B.normal_()
        lora.scale.copy_(torch.tensor([0.5, 2.0]))
    x = torch.randn(3, 5, 8)
    delta = [s * B @ A for s, A, B in zip(lora.scale, lora.A, lora.B)]
    expected = F.linear(x, qkv.weight + torch.cat([torch.zeros(8, 8), *delta]), qkv.bias)
    assert torch.allclose(qkv(x) + lora(x), expected, atol=1e-5)


def test_prefix_compensation_renormalises_the_attention_on_the_prefix():
    prefix = Prefix(attn_dim=4, length=2)
    weights = torch.tensor([[0.1, 0.2, 0.2, 0.5]])  # class token, 2 prefix positions, one patch
    assert torch.allclose(prefix.compensate(weights), torch.tensor([[0.1, 0.5, 0.5, 0.5]]))


def train(strategy: LAE, stream, tasks: int) -> None:
    for task in stream.tasks[:tasks]:
        strategy.train_task(task)


def online_state(strategy: LAE) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in strategy.online.named_parameters()}


def record_after_each_step(strategy: LAE) -> list[dict[str, torch.Tensor]]:
    """The online PETs and the newest head after every optimizer step (the EMA step runs right after it)."""
    steps, accumulate = [], strategy.accumulate

    def recorded():
        steps.append({**online_state(strategy), "head": strategy.heads.weight.detach().clone()})
        accumulate()

    strategy.accumulate = recorded
    return steps


def test_warm_up_epochs_train_the_head_and_leave_the_pets_unchanged(backbone, stream):
    strategy = lae(backbone.model)
    train(strategy, stream, 1)
    start = online_state(strategy)
    steps = record_after_each_step(strategy)
    strategy.train_task(stream.tasks[1])
    per_epoch = len(stream.tasks[1].train) // 32
    warm_up, training = steps[:per_epoch], steps[per_epoch:]
    assert len(warm_up) == len(training) == per_epoch
    assert all(torch.equal(step[name], start[name]) for step in warm_up for name in start)
    assert not torch.equal(warm_up[0]["head"], warm_up[-1]["head"])
    assert any(not torch.equal(training[-1][name], start[name]) for name in start)


def test_offline_pets_start_as_a_copy_at_the_second_task_then_follow_the_ema_of_every_step(backbone, stream):
    decay = 0.9  # visible within a task (the reference's 0.9999 moves 1e-4 per step)
    strategy = lae(backbone.model, ema_decay=decay)
    train(strategy, stream, 1)
    offline = online_state(strategy)  # the copy taken when the second task starts
    steps = record_after_each_step(strategy)
    strategy.train_task(stream.tasks[1])
    strategy.train_task(stream.tasks[2])  # its warm-up epoch moves the offline PETs: they lag behind the online ones
    assert len(steps) == sum(2 * (len(task.train) // 32) for task in stream.tasks[1:3])  # warm-up steps included
    for step in steps:
        offline = {name: decay * offline[name] + (1 - decay) * step[name] for name in offline}
    assert all(torch.allclose(b, offline[name], atol=1e-6) for name, b in strategy.offline.named_buffers())
    assert not all(torch.allclose(offline[name], steps[-1][name], atol=1e-3) for name in offline)


def test_n_ema_steps_towards_fixed_online_pets_follow_the_closed_form(backbone):
    strategy = lae(backbone.model, ema_decay=0.99)
    with torch.no_grad():
        for parameter in strategy.online.parameters():
            parameter.fill_(1.0)
        for buffer in strategy.offline.buffers():
            buffer.fill_(-1.0)
    for _ in range(50):
        strategy.accumulate()
    expected = 0.99 ** 50 * -1.0 + (1 - 0.99 ** 50) * 1.0
    assert all(torch.allclose(b, torch.full_like(b, expected), atol=1e-6) for b in strategy.offline.buffers())


def test_the_ensemble_takes_the_classwise_max_of_the_two_softmaxes():
    online = torch.tensor([[0.5, 0.45, 0.05]]).log()
    offline = torch.tensor([[0.1, 0.46, 0.44]]).log() + 5.0  # larger logits, same softmax
    assert torch.allclose(max_softmax(online, offline), torch.tensor([[0.5, 0.46, 0.44]]))
    assert max_softmax(online, offline).argmax() == 0  # the mean of the softmaxes and the max logit pick class 1
    assert ((online.softmax(1) + offline.softmax(1)) / 2).argmax() == 1 and torch.maximum(online, offline).argmax() == 1


def test_predict_ensembles_the_online_and_offline_experts_from_the_second_task_on(backbone, stream):
    strategy = lae(backbone.model)
    images = torch.stack([stream.tasks[0].test[i][0] for i in range(4)])
    train(strategy, stream, 1)
    strategy.eval()
    with torch.no_grad():
        assert torch.allclose(strategy.predict(images), strategy(images).softmax(1))
    one_pass = costs.flops_per_image(strategy, images[0])
    strategy.train_task(stream.tasks[1])
    offline_expert = copy.deepcopy(strategy)  # the same network with the offline tensors in the online PETs
    with torch.no_grad():
        for name, buffer in offline_expert.offline.named_buffers():
            offline_expert.online.get_parameter(name).copy_(buffer)
    strategy.eval()
    offline_expert.eval()
    with torch.no_grad():
        online_logits, offline_logits = strategy(images), offline_expert(images)
        assert not torch.allclose(online_logits, offline_logits)
        assert torch.allclose(strategy.predict(images), max_softmax(online_logits, offline_logits))
    assert costs.flops_per_image(strategy, images[0]) > 1.9 * one_pass  # two forward passes per image


def test_a_domain_incremental_stream_keeps_one_head(backbone):
    stream = build_stream("mini-domain-digits", 1993, image_spec=backbone.image_spec, domains=["clean", "inverted"])
    strategy = lae(backbone.model)
    train(strategy, stream, 2)
    images = torch.stack([stream.tasks[1].test[i][0] for i in range(4)])
    strategy.eval()
    with torch.no_grad():
        assert strategy.heads.sizes.tolist() == [10] and strategy.predict(images).shape == (4, 10)


LAE_CRASHES_ONCE = crashing_once(LAE, "lae_crashes_once")


def test_a_resumed_lae_run_equals_an_uninterrupted_one(write_suite, tmp_path):
    assert_resuming_changes_nothing("lae_crashes_once", LAE_CRASHES_ONCE, FAST, write_suite, tmp_path)
