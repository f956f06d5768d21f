"""The adapter bank: a set runs only inside its selection and computes AdaptFormer's block written out by hand; every
other pass is the pre-trained network. The two merges against hand cases, the sets' sizes on ViT-B/16 against the
official logs, and the strategies on the bank (EASE, MOS, TUNA) rebuilt from a checkpoint's state."""

import copy

import pytest
import timm
import torch
import torch.nn.functional as F

from benchmark import costs
from benchmark.checkpoints import load_resizing
from benchmark.runtime import Runtime
from benchmark.sharing import MEMO
from strategies._adapter_bank import AdapterBank, ema_merge, emr_merge, merged_state, stored_sets
from strategies.base import build_strategy

RUNTIME = Runtime.resolve("cpu", "fp32", progress=False)


def frozen_copy(backbone):
    model = copy.deepcopy(backbone.model)
    model.reset_classifier(0)
    return model.eval().requires_grad_(False)


def randomise(adapters, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in adapters.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)


def by_hand(model, adapters, x):
    """timm's ViT with x1 = x + attn(LN1 x), x2 = x1 + mlp(LN2 x1) + 0.1 up(relu(down x1)) in every block."""
    tokens = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
    for block, adapter in zip(model.blocks, adapters):
        tokens = tokens + block.attn(block.norm1(tokens))
        tokens = tokens + block.mlp(block.norm2(tokens)) + 0.1 * adapter.up(F.relu(adapter.down(tokens)))
    return model.forward_head(model.norm(tokens), pre_logits=True)


def test_a_set_runs_only_when_selected_and_is_adaptformers_block(backbone, stream):
    model = frozen_copy(backbone)
    x = stream.tasks[0].test[0][0][None].repeat(3, 1, 1, 1)
    pretrained = model(x)
    bank = AdapterBank(model, bottleneck=4, scale=0.1, dropout=0.1)
    for seed in range(3):
        randomise(bank.add(), seed)
    bank.eval()  # no dropout
    assert torch.equal(model(x), pretrained)  # every set bypassed at rest
    every = bank.every_set(model, x, RUNTIME)
    assert every.shape == (3, 3, model.num_features)
    for index in range(3):
        expected = by_hand(model, bank.sets[index], x)
        assert torch.allclose(every[index], expected, atol=1e-5)
        assert torch.allclose(bank.features(model, x, index), expected, atol=1e-5)
        assert not torch.allclose(expected, pretrained, atol=1e-3)
    assert torch.equal(bank.features(model, x, None), pretrained)
    assert torch.equal(model(x), pretrained)  # and again after the selections


def test_a_frozen_sets_evaluation_pass_is_computed_once_and_a_changed_set_again(backbone, stream):
    """Sharing per set: after a set is added, the earlier sets' features of the same batch come from the memo (the
    very tensors a fresh pass gives); a set whose weights change (MOS's merge) is computed anew."""
    model = frozen_copy(backbone)
    x = torch.stack([image for image, _ in list(stream.tasks[0].test)[:4]])
    bank = AdapterBank(model, bottleneck=4, scale=0.1, dropout=0.1)
    randomise(bank.add(), 0)
    bank.eval()
    MEMO.clear()
    with torch.no_grad():
        first = bank.every_set(model, x, RUNTIME)
        assert (MEMO.hits, MEMO.misses) == (0, 1)
        randomise(bank.add(), 1)
        bank.eval()
        both = bank.every_set(model, x, RUNTIME)
        assert (MEMO.hits, MEMO.misses) == (1, 2)  # set 0 taken, set 1 computed
        assert both[0].data_ptr() != first[0].data_ptr() and torch.equal(both[0], first[0])
        assert torch.equal(both[1], bank.features(model, x, 1))  # a fresh pass: the same tensor
        randomise(bank.sets[0], 2)  # set 0 changed in place
        again = bank.every_set(model, x, RUNTIME)
        assert (MEMO.hits, MEMO.misses) == (2, 3)  # set 1 taken, set 0 computed anew
        assert torch.equal(again[0], bank.features(model, x, 0)) and not torch.equal(again[0], first[0])
    bank.train()
    with torch.no_grad():
        bank.every_set(model, x, RUNTIME)
    assert (MEMO.hits, MEMO.misses) == (2, 3)  # a pass in train mode (dropout) is never shared
    MEMO.clear()


def test_a_new_set_adds_nothing_or_copies_the_set_it_is_like(backbone, stream):
    model = frozen_copy(backbone)
    x = stream.tasks[0].test[0][0][None]
    bank = AdapterBank(model, bottleneck=4, scale=0.1, dropout=0.0)
    bank.add()
    assert torch.allclose(bank.features(model, x, 0), model(x), atol=1e-6)  # up-projections start at zero
    randomise(bank.sets[0], 1)
    copied = bank.add(like=0)
    assert all(torch.equal(a, b) for a, b in zip(copied.parameters(), bank.sets[0].parameters()))
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(copied.parameters(), bank.sets[0].parameters()))
    assert stored_sets({f"bank.sets.{i}.0.down.weight": None for i in range(2)}, "bank") == 2
    assert stored_sets({"other.sets.4.0.up.bias": None}, "bank") == 0


def test_ema_merge_is_moss_formula():
    current, earlier = torch.tensor([10.0, -4.0]), [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.0])]
    # (1 - 0.1) * current + 0.1 * mean(earlier) = 0.9 * [10, -4] + 0.1 * [2, 1]
    assert torch.allclose(ema_merge(current, earlier, 0.1), torch.tensor([9.2, -3.5]))
    assert torch.equal(ema_merge(current, earlier, 0.0), current)


def test_emr_merge_elects_the_sign_and_keeps_the_largest_agreeing_magnitude():
    tensors = [torch.tensor([1.0, -2.0, 3.0, 0.5, 2.0]),
               torch.tensor([2.0, 1.0, -5.0, -0.5, -2.0]),
               torch.tensor([-4.0, 0.5, 1.0, 0.0, 0.0])]
    # means: -1/3 (-), -1/6 (-), -1/3 (-), 0 (counts as -), 0 (counts as -)
    # agreeing with -: {-4} -> 4; {-2} -> 2; {-5} -> 5; {-0.5} -> 0.5; {-2} -> 2
    assert torch.equal(emr_merge(tensors), torch.tensor([-4.0, -2.0, -5.0, -0.5, -2.0]))
    positive = [torch.tensor([1.0, 3.0]), torch.tensor([2.0, -1.0])]  # means 1.5, 1: keep the largest positive
    assert torch.equal(emr_merge(positive), torch.tensor([2.0, 3.0]))
    assert torch.equal(emr_merge([torch.tensor([-1.0]), torch.tensor([1.0])]), torch.tensor([-1.0]))  # tie: -


def test_merged_state_merges_name_by_name(backbone):
    bank = AdapterBank(frozen_copy(backbone), bottleneck=2, scale=0.1, dropout=0.0)
    for seed in range(2):
        randomise(bank.add(), seed)
    merged = merged_state(bank.sets, lambda tensors: tensors[0] - tensors[1])
    first, second = bank.sets[0].state_dict(), bank.sets[1].state_dict()
    assert merged.keys() == first.keys()
    assert all(torch.equal(merged[name], first[name] - second[name]) for name in merged)


def test_the_strategies_sets_on_vit_b16_have_the_official_logs_parameter_counts():
    """On a random-weight ViT-B/16, with the classifier grown to CIFAR-100's 100 classes. EASE's log
    (sun-hailong/CVPR24-Ease@6d67508 logs/ease/cifar224/0/5/_1993_vit_base_patch16_224_in21k_ease.log:38-39): "All
    params: 86988288", "Trainable params: 1189632" (one bottleneck-64 set; its prototypes are not parameters). MOS's
    (sun-hailong/AAAI25-MOS@8d5e07c logs/mos/cifar224/0/5/ _1993_vit_base_patch16_224_in21k_mos.log:37-38): 86,179,876
    total, 381,220 trainable: a bottleneck-16 set (304,320) and the 100-class linear head (76,900). TUNA's log
    (logs/tuna/cifar224/0/5/ _1993_vit_base_patch16_224_in21k_tuna.log:38-39) prints the same 381,220, which counts the
    ViT's linear head that TUNA never trains; its classifier is the cosine `fc`, 768 numbers per class, no bias."""
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    counts = {}
    for name in ("ease", "mos", "tuna"):
        strategy = build_strategy(name, {}, model, RUNTIME)
        strategy.bank.add()
        if hasattr(strategy, "head"):
            strategy.head.grow(100)
        counts[name] = costs.parameter_counts(strategy)
    assert (counts["ease"]["params_trainable"], counts["ease"]["params_total"]) == (1_189_632, 86_988_288)
    assert (counts["mos"]["params_trainable"], counts["mos"]["params_total"]) == (381_220, 86_179_876)
    assert counts["tuna"]["params_trainable"] == 304_320 + 768 * 100


@pytest.mark.parametrize("name", ["ease", "mos", "tuna"])
def test_a_checkpointed_state_rebuilds_the_sets_and_predicts_the_same(name, backbone, stream):
    torch.manual_seed(0)
    params = {"epochs": 1, "batch_size": 64, **({} if name == "ease" else {"ca_epochs": 1, "ca_samples": 8})}
    strategy = build_strategy(name, params, copy.deepcopy(backbone.model), RUNTIME)
    for task in stream.tasks[:2]:
        strategy.train_task(task)
    state = strategy.state_dict()
    fresh = build_strategy(name, params, copy.deepcopy(backbone.model), RUNTIME)
    fresh.prepare_to_load(state)
    load_resizing(fresh, state)
    images = torch.stack([stream.tasks[1].test[i][0] for i in range(6)])
    with torch.no_grad():
        assert torch.equal(fresh.eval().predict(images), strategy.eval().predict(images))
    assert costs.parameter_counts(fresh) == costs.parameter_counts(strategy)
