"""APER's first-session variants (and RanPAC's phase 1) against independent computations: SSF's y = gamma x + beta by
hand and at every place the reference inserts it, VPT's prompts where the reference appends and drops them, both
checked against a ViT forward written out here from the reference's code (RevisitingCIL@a2e6b71
`convs/vision_transformer_ssf.py`, `convs/vpt.py`); full fine-tuning's trainable set; the parameter counts of
ViT-B/16 that RevisitingCIL's logs print; the presets of the official jsons."""

from __future__ import annotations

import copy
import math
from typing import Optional

import pytest
import timm
import torch
import torch.nn.functional as F
import yaml
from torch import nn

import run_suite
from benchmark import costs
from benchmark.errors import ConfigError
from benchmark.evaluation import as_tensors
from benchmark.runtime import Runtime
from benchmark.sharing import MEMO
from strategies._first_session import PETLS, FirstSessionConfig
from strategies._ssf import ScaleShift, ScaleShiftFeatures
from strategies._vpt import VisualPrompts
from strategies.aper import APER
from strategies.base import build_strategy, strategy_config
from test_checkpoints import assert_resuming_changes_nothing, crashing_once
from test_sharing import numbers
from test_suite import suite

RUNTIME = Runtime.resolve("cpu", "fp32", progress=False)
ScaleShifts = dict[str, tuple[torch.Tensor, torch.Tensor]]  # module path -> (gamma, beta)


def layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def manual_features(model: nn.Module, images: torch.Tensor, ssf: Optional[ScaleShifts] = None,
                    prompts: Optional[torch.Tensor] = None, deep: bool = False) -> torch.Tensor:
    """A timm ViT's [CLS] pre-logits written out from its weights, with SSF's scale-and-shift after the modules of
    `ssf` (channels on axis 1 of the patch projection's output, last elsewhere) and VPT's prompts appended after the
    patch tokens: once before the first block and dropped after the last (shallow), or per block (deep)."""
    ssf = ssf or {}

    def scaled(path: str, x: torch.Tensor, axis: int = -1) -> torch.Tensor:
        if path not in ssf:
            return x
        gamma, beta = ssf[path]
        shape = [1] * x.dim()
        shape[axis] = -1
        return x * gamma.view(shape) + beta.view(shape)

    proj = model.patch_embed.proj
    x = scaled("patch_embed.proj", F.conv2d(images, proj.weight, proj.bias, stride=proj.stride), axis=1)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([model.cls_token.expand(len(x), -1, -1), x], dim=1) + model.pos_embed
    batch, tokens, dim = x.shape

    def block(index: int, x: torch.Tensor) -> torch.Tensor:
        b, name = model.blocks[index], f"blocks.{index}."
        length, heads = x.shape[1], b.attn.num_heads
        qkv = scaled(name + "attn.qkv", F.linear(scaled(name + "norm1", layer_norm(b.norm1, x)), b.attn.qkv.weight,
                                                   b.attn.qkv.bias))
        q, k, v = qkv.reshape(batch, length, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        attention = ((q @ k.transpose(-2, -1)) / math.sqrt(dim // heads)).softmax(-1) @ v
        attention = attention.transpose(1, 2).reshape(batch, length, dim)
        x = x + scaled(name + "attn.proj", F.linear(attention, b.attn.proj.weight, b.attn.proj.bias))
        hidden = F.gelu(scaled(name + "mlp.fc1", F.linear(scaled(name + "norm2", layer_norm(b.norm2, x)),
                                                          b.mlp.fc1.weight, b.mlp.fc1.bias)))
        return x + scaled(name + "mlp.fc2", F.linear(hidden, b.mlp.fc2.weight, b.mlp.fc2.bias))

    if prompts is not None and not deep:
        x = torch.cat([x, prompts[0].expand(batch, -1, -1)], dim=1)
    for index in range(len(model.blocks)):
        if prompts is not None and deep:
            x = block(index, torch.cat([x, prompts[index].expand(batch, -1, -1)], dim=1))[:, :tokens]
        else:
            x = block(index, x)
    return scaled("norm", layer_norm(model.norm, x[:, :tokens]))[:, 0]


@pytest.fixture
def model(backbone) -> nn.Module:
    """The tiny ViT (2 blocks, width 32) without its head, in eval mode."""
    model = copy.deepcopy(backbone.model).eval()
    model.reset_classifier(0)
    return model


@pytest.fixture
def images(stream) -> torch.Tensor:
    return as_tensors(stream.tasks[0].test)[0][:6]


def test_a_scale_and_shift_is_gamma_x_plus_beta_per_channel():
    layer = ScaleShift(3)
    with torch.no_grad():
        layer.scale.copy_(torch.tensor([2.0, -1.0, 0.5]))
        layer.shift.copy_(torch.tensor([1.0, 0.0, -2.0]))
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert torch.equal(layer(x), torch.tensor([[3.0, -2.0, -0.5], [9.0, -5.0, 1.0]]))  # by hand
    conv = ScaleShift(3, channel_axis=1)
    conv.load_state_dict(layer.state_dict())
    maps = torch.arange(12.0).reshape(1, 3, 2, 2)  # channel c holds 4c .. 4c + 3
    assert torch.equal(conv(maps)[0, :, 0, 0], torch.tensor([2 * 0 + 1, -1 * 4 + 0, 0.5 * 8 - 2]))
    hooked = nn.Identity()
    layer.attach(hooked)
    assert torch.equal(hooked(x), layer(x))
    layer.bypass = True
    assert torch.equal(hooked(x), x)


def test_ssf_scales_and_shifts_where_the_reference_does(model, images):
    torch.manual_seed(0)
    ssf = ScaleShiftFeatures(model)
    expected_places = ["patch_embed.proj"] + [f"blocks.{i}.{p}" for i in range(2)
                                              for p in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1",
                                                        "mlp.fc2")] + ["norm"]
    assert list(ssf.paths) == expected_places
    assert [layer.scale.numel() for layer in ssf.layers] == [32] + [32, 96, 32, 32, 128, 32] * 2 + [32]
    with torch.no_grad():  # far from the reference's initialisation, so that a misplaced one shows
        for layer in ssf.layers:
            layer.scale.normal_(1.0, 0.5)
            layer.shift.normal_(0.0, 0.5)
        by_hand = manual_features(model, images, {p: (l.scale, l.shift) for p, l in zip(ssf.paths, ssf.layers)})
        assert torch.allclose(ssf.adapted(model, images), by_hand, atol=1e-5)
        plain = manual_features(model, images)
        assert torch.allclose(ssf.pretrained(model, images), plain, atol=1e-5)
        assert not torch.allclose(by_hand, plain, atol=1e-2)


def test_ssf_starts_as_the_reference_draws_it_not_at_identity(model, images):
    """`init_ssf_scale_shift`: gamma ~ N(1, 0.02), beta ~ N(0, 0.02); so a fresh SSF network is not the pre-trained
    one."""
    torch.manual_seed(0)
    layer = ScaleShift(200_000)
    assert layer.scale.mean().item() == pytest.approx(1.0, abs=1e-3)
    assert layer.scale.std().item() == pytest.approx(0.02, rel=0.02)
    assert layer.shift.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert layer.shift.std().item() == pytest.approx(0.02, rel=0.02)
    ssf = ScaleShiftFeatures(model)
    with torch.no_grad():
        assert not torch.allclose(ssf.adapted(model, images), ssf.pretrained(model, images), atol=1e-4)


@pytest.mark.parametrize("deep", [False, True], ids=["shallow", "deep"])
def test_vpt_appends_prompts_where_the_reference_does(deep, model, images):
    torch.manual_seed(0)
    vpt = VisualPrompts(model, tokens=3, deep=deep)
    assert vpt.prompts.shape == ((2 if deep else 1), 3, 32)
    with torch.no_grad():
        vpt.prompts.normal_()
    seen: dict[str, list[torch.Tensor]] = {"blocks": [], "norm": []}
    for block in model.blocks:  # registered after VPT's hooks: sees what the block gets
        block.register_forward_pre_hook(lambda module, args: seen["blocks"].append(args[0]))
    model.norm.register_forward_pre_hook(lambda module, args: seen["norm"].append(args[0]))
    with torch.no_grad():
        adapted = vpt.adapted(model, images)
        by_hand = manual_features(model, images, prompts=vpt.prompts, deep=deep)
    assert torch.allclose(adapted, by_hand, atol=1e-5)
    patches = model.patch_embed.num_patches + 1
    assert [x.shape[1] for x in seen["blocks"]] == [patches + 3, patches + 3]  # every block runs with the prompts
    assert seen["norm"][0].shape[1] == patches  # dropped before the final norm: the head reads the class token
    assert torch.equal(seen["blocks"][0][0, -3:], vpt.prompts[0])
    second_block_prompts = seen["blocks"][1][0, -3:]
    if deep:  # replaced by block 1's own prompts
        assert torch.equal(second_block_prompts, vpt.prompts[1])
    else:  # what block 0 made of them
        assert not torch.allclose(second_block_prompts, vpt.prompts[0], atol=1e-3)
    seen["blocks"].clear()
    with torch.no_grad():
        assert torch.allclose(vpt.pretrained(model, images), manual_features(model, images), atol=1e-5)
    assert [x.shape[1] for x in seen["blocks"]] == [patches, patches]  # bypassed: no prompt anywhere


def test_zero_prompts_still_change_the_features(model, images):
    """The reference starts prompts at zero; a zero token still takes part in attention (LN(0) = LN's bias)."""
    vpt = VisualPrompts(model, tokens=5, deep=False)
    assert torch.count_nonzero(vpt.prompts) == 0
    with torch.no_grad():
        assert not torch.allclose(vpt.adapted(model, images), vpt.pretrained(model, images), atol=1e-4)


def test_finetune_trains_every_weight_of_a_copy_and_keeps_the_backbone(backbone, stream, images):
    torch.manual_seed(0)
    strategy = build_strategy("aper", {"petl": "finetune", "epochs": 1, "lr": 0.1, "batch_size": 16},
                              copy.deepcopy(backbone.model), RUNTIME)
    tuned = strategy.first_session.tuned
    trainable = {name for name, p in strategy.named_parameters() if p.requires_grad}
    assert trainable == {f"first_session.tuned.{name}" for name, _ in tuned.named_parameters()}
    before = copy.deepcopy(strategy.state_dict())
    strategy.train_task(stream.tasks[0])
    after = strategy.state_dict()
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    assert {f"first_session.tuned.{name}" for name, _ in tuned.named_parameters()} <= moved
    assert not any(name.startswith("backbone.") for name in moved)
    strategy.eval()
    reference = copy.deepcopy(backbone.model).eval()
    reference.reset_classifier(0)
    with torch.no_grad():
        assert torch.equal(strategy.first_session.pretrained(strategy.backbone, images), reference(images))
    counts = costs.parameter_counts(strategy)
    model_size = sum(p.numel() for p in reference.parameters())
    assert counts["params_trainable"] == model_size  # the copy; the first session's head is gone
    assert counts["params_total"] == 2 * model_size


# RevisitingCIL@a2e6b71 logs, ViT-B/16 (in21k) before the first task: "All params" - 85,798,656 (the ViT without
# head, logs/aper_finetune/cifar224/exp_1993_pretrained_vit_b16_224_in21k.log:21) and "Trainable params":
# adapter logs/aper_adapter/cifar224/..._adapter.log:23-24 (86,988,288; 1,189,632), ssf logs/aper_ssf/cifar224/
# ..._ssf.log:23 (86,004,480), vpt logs/aper_vpt/cifar224/exp_vpt-{shallow,deep}_..._vpt.log:23-24 (3,840; 46,080).
VIT_B16_COUNTS = {"adapter": 1_189_632, "ssf": 205_824, "vpt_shallow": 3_840, "vpt_deep": 46_080,
                  "finetune": 85_798_656}


def test_parameter_counts_on_vit_b16_are_those_of_the_reference_logs():
    with torch.device("meta"):  # shapes only: a random ViT-B/16 without allocating it
        vit = timm.create_model("vit_base_patch16_224", num_classes=0)
        assert sum(p.numel() for p in vit.parameters()) == 85_798_656
        config = FirstSessionConfig(petl="adapter", epochs=1, batch_size=1, lr=1.0, weight_decay=0.0)
        counts = {name: sum(p.numel() for p in PETLS.get(name)(vit, config).parameters()) for name in PETLS.names()}
    assert counts == VIT_B16_COUNTS


# The official jsons (RevisitingCIL@a2e6b71 exps/aper_<petl>/cifar224_5_5_vit-b_<petl>.json and imagenetr_...):
# epochs, batch, lr, weight decay; finetune's CIFAR run as its log records it (log:213-220)
OFFICIAL = {
    ("adapter", "reference"): (20, 48, 0.01, 5e-4), ("adapter", "reference-imagenet-r"): (20, 24, 0.05, 5e-3),
    ("ssf", "reference"): (20, 48, 0.01, 5e-4), ("ssf", "reference-imagenet-r"): (20, 48, 0.01, 5e-4),
    ("vpt_shallow", "reference"): (20, 48, 0.01, 5e-4), ("vpt_shallow", "reference-imagenet-r"): (20, 48, 0.01, 5e-4),
    ("vpt_deep", "reference"): (5, 16, 0.05, 5e-4), ("vpt_deep", "reference-imagenet-r"): (5, 16, 0.05, 5e-4),
    ("finetune", "reference"): (20, 48, 0.01, 0.05), ("finetune", "reference-imagenet-r"): (5, 128, 0.01, 5e-4),
}


@pytest.mark.parametrize("petl, preset", sorted(OFFICIAL))
def test_reference_presets_are_the_official_settings_and_recipe(petl, preset):
    config = strategy_config("aper", {"petl": petl, "preset": preset})
    assert (config.epochs, config.batch_size, config.lr, config.weight_decay) == OFFICIAL[petl, preset]
    assert (config.input, config.precision, config.schedule, config.prompt_tokens) == (
        "unnormalised", "fp32", "cosine-epochs", 5)


def test_ranpac_imagenet_r_phase_one_is_ssf_at_the_official_settings():
    """RanPAC@012927f args/imagenetr_publish.csv ID 7: ssf, 20 epochs, batch 48, lr 0.01, wd 5e-4, min_lr 0,
    M 10,000."""
    config = strategy_config("ranpac", {"preset": "reference-imagenet-r"})
    assert (config.petl, config.epochs, config.batch_size, config.lr, config.weight_decay) == ("ssf", 20, 48, 0.01,
                                                                                                5e-4)
    assert (config.projection_dim, config.schedule, config.input) == (10000, "cosine-epochs", "unnormalised")
    assert strategy_config("ranpac", {"preset": "reference"}).petl == "adapter"  # CIFAR-100: ID 7 is the adapter


def test_ranpac_phase_one_trains_the_chosen_module_on_the_first_task_only(backbone, stream, images):
    torch.manual_seed(0)
    strategy = build_strategy("ranpac", {"petl": "vpt_deep", "epochs": 1, "projection_dim": 16},
                              copy.deepcopy(backbone.model), RUNTIME)
    assert torch.count_nonzero(strategy.first_session.prompts) == 0
    strategy.train_task(stream.tasks[0])
    trained = strategy.first_session.prompts.detach().clone()
    assert torch.count_nonzero(trained) > 0
    strategy.train_task(stream.tasks[1])
    assert torch.equal(strategy.first_session.prompts, trained)
    strategy.eval()
    with torch.no_grad():  # RanPAC reads the prompted network
        assert torch.allclose(strategy.features(images),
                              manual_features(strategy.backbone, images, prompts=trained, deep=True), atol=1e-5)


def test_sharing_changes_no_number_of_the_variants(tmp_path, tiny_backbone_params):
    """The prompts' block pre-hooks are in the fingerprint that decides what is shared: a suite of RanPAC with deep
    prompts in phase 1 writes the same results with sharing on and off. (SSF's output hooks are the kind the
    adapter's are, which tests/test_sharing.py covers; the fine-tuned copy is an ordinary submodule, whose tensors
    the fingerprint reads as any other.)"""
    strategies = {"ranpac@vpt_deep": {"petl": "vpt_deep", "epochs": 1, "projection_dim": 32}}
    outs = {}
    for share in (True, False):
        config = tmp_path / f"share-{share}.yaml"
        config.write_text(yaml.safe_dump({
            "backbones": {"vit-mini": tiny_backbone_params}, "streams": {"mini-split-digits": {"n_tasks": 2}},
            "strategies": strategies, "retention": {"eval_size": 20, "protocols": {"knn": {"bank_size": 20}}},
            "device": "cpu", "precision": "fp32", "share": share}))
        MEMO.clear()
        assert suite(config, tmp_path / f"out-{share}") == 0
        assert (MEMO.hits > 0) == share
        outs[share] = numbers(tmp_path / f"out-{share}")
    assert len(outs[True]) == len(strategies) and outs[True] == outs[False]


APER_CRASHES_ONCE = crashing_once(APER, "aper_crashes_once")


def test_a_resumed_ssf_run_equals_an_uninterrupted_one(write_suite, tmp_path):
    """SSF's scales and shifts come back from the checkpoint (the fresh strategy draws others first)."""
    assert_resuming_changes_nothing("aper_crashes_once", APER_CRASHES_ONCE, {"petl": "ssf", "epochs": 1},
                                    write_suite, tmp_path)


def test_bad_first_session_settings_are_one_line_and_exit_2(write_suite, tmp_path, capsys):
    with pytest.raises(ConfigError, match="strategies.aper.prompt_tokens: must be >= 1, got 0"):
        strategy_config("aper", {"petl": "vpt_deep", "prompt_tokens": 0})
    cases = {"aper": ({"petl": "lora"}, "strategies.aper.petl: must be one of adapter, ssf, vpt_shallow, vpt_deep, "
                                        "finetune, got 'lora'"),
             "ranpac": ({"petl": "finetune"}, "strategies.ranpac.petl: must be one of adapter, ssf, vpt_deep, "
                                              "vpt_shallow, got 'finetune'")}
    for name, (params, message) in cases.items():
        out = tmp_path / name
        assert run_suite.main(["--config", str(write_suite(strategies={name: params})), "--out", str(out),
                               "--quiet"]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [f"error: {message}"]
        assert not out.exists()
