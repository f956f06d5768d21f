"""Each strategy's `reference` presets run its reference's whole recipe, pinned against independent statements of
what the reference code does (the files and lines are in each strategy's docstring and docs/recipes.md):
the input pipeline against a torchvision pipeline written from the reference's `build_transform` on hand-made
images, the learning rate of every epoch against the reference's formula or scheduler, head initialisation by its
statistics, eval-mode training, precision and class order. The suite's own protocol (`mini`, the default) is
unchanged."""

from __future__ import annotations

import copy
import dataclasses
import math
import random

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.transforms import RandomResizedCropAndInterpolation
from torch import nn
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from benchmark.config import parse_suite
from benchmark.datasets.files import RESIZE_TOLERANCE_LEVELS, eval_transform, train_transform
from benchmark.datasets.images import ImageSpec
from benchmark.recipe import INPUTS, input_pipeline
from benchmark.runtime import Runtime
from benchmark.streams import build_stream
from benchmark.streams.base import class_incremental
from benchmark.suite import plan_runs
from strategies._loop import TrainConfig, fit
from strategies.base import build_strategy, strategy_config

# The spec timm resolves for ViT-B/16 AugReg (vit_base_patch16_224.augreg_in21k*): what the references load.
VIT_B16 = ImageSpec(input_size=(3, 224, 224), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic",
                    crop_pct=0.9)
BICUBIC, BILINEAR = InterpolationMode.BICUBIC, InterpolationMode.BILINEAR

# (strategy, preset) -> the reference's test transform, as its code writes it (no Normalize anywhere)
RESIZE256_BICUBIC = T.Compose([T.Resize(256, BICUBIC), T.CenterCrop(224), T.ToTensor()])  # PILOT build_transform
REFERENCE_TEST = {
    ("ranpac", "reference"): T.Compose([T.Resize(224, BICUBIC), T.CenterCrop(224), T.ToTensor()]),  # isCifar
    ("ranpac", "reference-imagenet-r"): RESIZE256_BICUBIC,
    ("aper", "reference"): RESIZE256_BICUBIC,
    ("aper", "reference-imagenet-r"): RESIZE256_BICUBIC,
    ("ease", "reference"): RESIZE256_BICUBIC,  # CVPR24-Ease, AAAI25-MOS, TUNA utils/data.py: PILOT's build_transform
    ("ease", "reference-imagenet-r"): RESIZE256_BICUBIC,
    ("mos", "reference"): RESIZE256_BICUBIC,
    ("mos", "reference-imagenet-r"): RESIZE256_BICUBIC,
    ("tuna", "reference"): RESIZE256_BICUBIC,
    ("tuna", "reference-imagenet-r"): RESIZE256_BICUBIC,
    ("simplecil", "reference"): RESIZE256_BICUBIC,
    ("l2p", "reference"): RESIZE256_BICUBIC,
    ("l2p", "official"): RESIZE256_BICUBIC,
    ("dualprompt", "reference"): RESIZE256_BICUBIC,
    ("dualprompt", "official-imagenet-r"): RESIZE256_BICUBIC,
    ("sd_lora", "reference-imagenet-r"): RESIZE256_BICUBIC,
    ("cl_lora", "reference"): RESIZE256_BICUBIC,
    ("cl_lora", "reference-imagenet-r"): RESIZE256_BICUBIC,
    ("cl_lora", "reference-vtab"): RESIZE256_BICUBIC,
    ("inflora", "reference"): T.Compose([T.Resize(224), T.ToTensor()]),  # CIFAR: Resize(224), no crop
    ("inflora", "reference-imagenet-r"): T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()]),
    ("coda_prompt", "reference"): T.Compose([T.Resize(224), T.ToTensor()]),
    ("coda_prompt", "reference-imagenet-r"): T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()]),
    ("hide_prompt", "reference-imagenet-r"): RESIZE256_BICUBIC,  # HiDe-Prompt build_transform (CIFAR: its own test)
}
# (strategy, preset) -> the reference's RandomResizedCrop scale (torchvision's RandomResizedCrop, bilinear)
REFERENCE_TRAIN_SCALE = {
    ("ranpac", "reference"): (0.05, 1.0), ("aper", "reference"): (0.05, 1.0), ("l2p", "reference"): (0.05, 1.0),
    ("dualprompt", "official"): (0.05, 1.0), ("sd_lora", "reference"): (0.05, 1.0),
    ("cl_lora", "reference"): (0.05, 1.0), ("cl_lora", "reference-vtab"): (0.05, 1.0),
    ("inflora", "reference"): (0.08, 1.0), ("coda_prompt", "reference-imagenet-r"): (0.08, 1.0),
    ("ease", "reference"): (0.05, 1.0), ("mos", "reference-imagenet-r"): (0.05, 1.0),
    ("tuna", "reference"): (0.05, 1.0),
    ("hide_prompt", "reference-imagenet-r"): (0.05, 1.0),
}


def assert_same_pixels(ours: torch.Tensor, theirs: torch.Tensor, std: float = 1.0) -> None:
    """The suite's tensor pipeline gives the PIL pipeline's image: equal up to the resize's rounding, at most
    RESIZE_TOLERANCE_LEVELS grey levels anywhere and under 0.05 levels on average (`std`: the normalisation's)."""
    level = 1 / 255 / std
    assert ours.shape == theirs.shape
    assert float((ours - theirs).abs().max()) <= RESIZE_TOLERANCE_LEVELS * level + 1e-6
    assert float((ours - theirs).abs().mean()) < 0.05 * level


def hand_made_image(width: int, height: int) -> Image.Image:
    """An RGB image with structure at every scale: gradients in two channels, a checkerboard in the third."""
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    channels = [255 * x / max(width - 1, 1), 255 * y / max(height - 1, 1), 255 * (((x // 7) + (y // 5)) % 2)]
    return Image.fromarray(np.stack(channels, axis=-1).astype(np.uint8))


def run_spec(strategy: str, preset: str) -> ImageSpec:
    """The image spec a run of `strategy` with `preset` prepares its stream with, on ViT-B/16."""
    params = dataclasses.asdict(strategy_config(strategy, {"preset": preset}))
    return input_pipeline(params).image_spec(VIT_B16)


@pytest.mark.parametrize("strategy, preset", sorted(REFERENCE_TEST))
def test_reference_test_transform_is_the_references(strategy, preset):
    """CIFAR presets on a 32 x 32 image (the references resize CIFAR's squares), ImageNet-R presets on a 300 x 200
    one: the suite's test pipeline gives the reference's tensor, in [0, 1] (no mean/std)."""
    cifar = "imagenet" not in preset and strategy not in ("sd_lora",)
    image = hand_made_image(32, 32) if cifar else hand_made_image(300, 200)
    ours = eval_transform(run_spec(strategy, preset))(image)
    theirs = REFERENCE_TEST[(strategy, preset)](image)
    assert theirs.shape == (3, 224, 224)
    assert_same_pixels(ours, theirs)


@pytest.mark.parametrize("strategy, preset", sorted(REFERENCE_TRAIN_SCALE))
def test_reference_train_transform_is_the_references(strategy, preset):
    """With the same random draws, the suite's training pipeline crops the box torchvision's RandomResizedCrop(224,
    scale, ratio (3/4, 4/3)) would and resizes it bilinearly, flips when RandomHorizontalFlip would, and does not
    normalise: the same tensors (up to the resize's rounding) over 20 draws."""
    scale = REFERENCE_TRAIN_SCALE[(strategy, preset)]
    image = hand_made_image(300, 200)
    ours = train_transform(run_spec(strategy, preset), "rrc_flip")
    for draw in range(20):
        random.seed(draw)  # timm draws the box from Python's generator, the flip from torch's
        box = RandomResizedCropAndInterpolation.get_params(image, scale, (3 / 4, 4 / 3))
        torch.manual_seed(draw)
        flip = bool(torch.rand(1) < 0.5)
        expected = TF.resized_crop(image, *box, [224, 224], BILINEAR)
        expected = TF.to_tensor(TF.hflip(expected) if flip else expected)
        random.seed(draw)
        torch.manual_seed(draw)
        assert_same_pixels(ours(image), expected)


def test_the_suites_protocol_keeps_the_backbones_pipeline():
    """`mini` and every default: the backbone's own timm pipeline (normalised, crop_pct 0.9, scale (0.08, 1))."""
    assert run_spec("l2p", "mini") == VIT_B16
    assert input_pipeline(dataclasses.asdict(strategy_config("full_ft", {}))) is INPUTS.get("backbone")
    out = eval_transform(VIT_B16)(hand_made_image(300, 200))
    assert out.min() < 0  # normalised: [0, 1] -> [-1, 1]


def lr_per_epoch(config: TrainConfig, steps_per_epoch: int = 2) -> list[float]:
    """The lr of every epoch of one task as the shared loop runs `config`: a scalar parameter with gradient 1 under
    SGD without momentum moves by exactly the lr at each step."""
    config = dataclasses.replace(config, optimizer="sgd", momentum=0.0, weight_decay=0.0, batch_size=1,
                                 grad_clip=None, drop_last=False)
    weight = nn.Parameter(torch.zeros((), dtype=torch.float64))
    seen = []
    data = torch.utils.data.TensorDataset(torch.zeros(steps_per_epoch, 1), torch.zeros(steps_per_epoch).long())
    fit(lambda x, y: (seen.append(float(weight.detach())), weight * 1.0)[1], [weight], data, config,
        Runtime(torch.device("cpu"), progress=False))
    seen.append(float(weight.detach()))
    steps = [before - after for before, after in zip(seen, seen[1:])]
    per_epoch = [steps[e * steps_per_epoch: (e + 1) * steps_per_epoch] for e in range(config.epochs)]
    assert all(math.isclose(a, b, rel_tol=1e-5) for epoch in per_epoch for a, b in zip(epoch, epoch[1:]))
    return [epoch[0] / config.lr for epoch in per_epoch]


def gt_ripl_cosine(epochs: int) -> list[float]:
    """GT-RIPL's CosineSchedule as CODA-Prompt and InfLoRA run it (utils/schedulers.py: lr cos(99 pi e / (200 (K-1)));
    the constructor's step(0) then last_epoch = -1, so epochs 0 and 1 both run at e = 0, epoch i at e = i - 1)."""
    return [math.cos(99 * math.pi * max(i - 1, 0) / (200 * (epochs - 1))) for i in range(epochs)]


def test_coda_cosine_is_gt_ripls_schedule_epoch_by_epoch():
    # the values the reference class gives for K = 5 when run (research note: 1.0, 1.0, 0.9254, 0.7126, 0.3935)
    assert lr_per_epoch(TrainConfig(epochs=5, schedule="coda-cosine")) == pytest.approx(
        [1.0, 1.0, 0.9254, 0.7126, 0.3935], abs=1e-4)
    for strategy, preset in (("coda_prompt", "reference"), ("inflora", "reference"),
                             ("inflora", "reference-imagenet-r")):
        config = strategy_config(strategy, {"preset": preset})
        train = config.train_config() if hasattr(config, "train_config") else config
        assert lr_per_epoch(train, steps_per_epoch=1) == pytest.approx(gt_ripl_cosine(train.epochs), rel=1e-5)


def test_cosine_epochs_is_a_per_epoch_cosine_annealing():
    """APER and RanPAC's phase 1: CosineAnnealingLR(T_max=epochs, eta_min=0) stepped after each epoch, as the
    references call it, on a dummy optimiser."""
    for strategy in ("aper", "ranpac", "ease", "mos", "tuna"):
        train = strategy_config(strategy, {"preset": "reference"}).train_config()
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(()))], lr=1.0)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=train.epochs, eta_min=0)
        expected = []
        for _ in range(train.epochs):
            expected.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        assert lr_per_epoch(train, steps_per_epoch=1) == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_the_suites_cosine_still_anneals_per_step_to_zero():
    lrs = lr_per_epoch(TrainConfig(epochs=2, schedule="cosine"), steps_per_epoch=1)
    assert lrs == pytest.approx([1.0, 0.5])  # (1 + cos(pi s / 2)) / 2 at steps 0, 1


def test_official_prompt_ports_clip_the_gradient_norm_at_one():
    """l2p-pytorch and dualprompt-pytorch clip_grad_norm_(parameters, 1.0): with a gradient of norm 5, plain SGD moves
    the parameters by lr x 1 in total, not lr x 5."""
    for strategy in ("l2p", "dualprompt"):
        config = strategy_config(strategy, {"preset": "official"}).train_config()
        assert config.grad_clip == 1.0
        weight = nn.Parameter(torch.zeros(2))
        step = dataclasses.replace(config, optimizer="sgd", momentum=0.0, epochs=1, batch_size=1, lr=0.1,
                                   schedule="constant")
        data = torch.utils.data.TensorDataset(torch.zeros(1, 1), torch.zeros(1).long())
        fit(lambda x, y: weight @ torch.tensor([3.0, 4.0]), [weight], data, step,
            Runtime(torch.device("cpu"), progress=False))
        assert torch.allclose(weight.detach(), torch.tensor([-0.06, -0.08]), atol=1e-6)
    dualprompt = strategy_config("dualprompt", {"preset": "official"})
    assert (dualprompt.pull, dualprompt.lr) == (1.0, 0.03 * 24 / 256)
    assert strategy_config("l2p", {"preset": "reference"}).grad_clip is None  # PILOT does not clip


def head_rows(strategy: str, preset: str, backbone, rows: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
    """A new head of `rows` outputs as the strategy with `preset` initialises it (on the tiny backbone)."""
    built = build_strategy(strategy, {"preset": preset}, copy.deepcopy(backbone.model),
                           Runtime(torch.device("cpu"), progress=False))
    if hasattr(built, "heads"):
        built.heads.add(rows)
        return built.heads.weight.detach(), built.heads.bias.detach()
    built.head.grow(rows)
    return built.head.weight.detach(), built.head.bias.detach()


def test_head_initialisations_are_the_references(backbone):
    dim = backbone.model.num_features
    # SD-LoRA: PyCIL's SimpleLinear, kaiming_uniform_(nonlinearity="linear"): U(-sqrt(3/d), sqrt(3/d)), bias 0
    weight, bias = head_rows("sd_lora", "reference", backbone)
    bound = math.sqrt(3 / dim)
    assert weight.abs().max() <= bound and weight.abs().max() > 0.99 * bound
    assert float(weight.std()) == pytest.approx(1 / math.sqrt(dim), rel=0.03) and not bias.any()
    # InfLoRA and CODA-Prompt: nn.Linear's own init, weight and bias U(-1/sqrt(d), 1/sqrt(d))
    for strategy in ("inflora", "coda_prompt"):
        weight, bias = head_rows(strategy, "reference", backbone)
        bound = 1 / math.sqrt(dim)
        assert weight.abs().max() <= bound and float(weight.std()) == pytest.approx(bound / math.sqrt(3), rel=0.03)
        assert bias.abs().max() <= bound and float(bias.std()) == pytest.approx(bound / math.sqrt(3), rel=0.1)
    # the suite's protocol: timm's trunc-normal(0.02) with a zero bias
    weight, bias = head_rows("sd_lora", "mini", backbone)
    assert float(weight.std()) == pytest.approx(0.02, rel=0.05) and not bias.any()


def test_inflora_trains_in_eval_mode(backbone, stream):
    """The reference calls self._network.eval() before every epoch: nothing but the adapted layers' unmerged path is in
    train mode while InfLoRA trains (attention dropout and drop-path stay off)."""
    strategy = build_strategy("inflora", {"preset": "mini", "epochs": 1}, copy.deepcopy(backbone.model),
                              Runtime(torch.device("cpu"), progress=False))
    modes = []
    hook = strategy.backbone.blocks[0].attn.register_forward_pre_hook(
        lambda module, args: modes.append((module.training, module.qkv.training)) if torch.is_grad_enabled() else None)
    strategy.train_task(stream.tasks[0])
    hook.remove()
    assert modes and set(modes) == {(False, True)}


def test_reference_presets_run_in_fp32_whatever_the_suite_says(tiny_backbone_params):
    config = parse_suite({"backbones": {"vit-mini": tiny_backbone_params}, "streams": ["mini-split-digits"],
                          "strategies": {"simplecil": {"preset": "reference"}, "linear": {}}, "precision": "bf16",
                          "device": "cpu"}, "recipe")
    bf16 = {spec.strategy: spec for spec in plan_runs(config, Runtime.resolve("cpu", "bf16", progress=False))}
    fp32 = {spec.strategy: spec for spec in plan_runs(config, Runtime.resolve("cpu", "fp32", progress=False))}
    assert (bf16["simplecil"].precision, bf16["linear"].precision) == ("fp32", "bf16")
    assert bf16["simplecil"].run_id == fp32["simplecil"].run_id  # the preset's precision, whatever the suite's
    assert bf16["linear"].run_id != fp32["linear"].run_id  # another precision is another run


def test_natural_class_order_keeps_the_data_sets_order():
    """InfLoRA's and CODA-Prompt's published runs keep the classes in order (`shuffle: false`)."""
    images = torch.zeros(40, 1, 4, 4)
    labels = torch.arange(40) % 10
    natural = class_incremental("toy", (images, labels), (images, labels), 5, 1993, [str(c) for c in range(10)],
                                shuffle=False)
    assert natural.class_order == tuple(range(10)) and natural.tasks[1].classes == (2, 3)
    seeded = build_stream("mini-split-digits", 1993, image_spec=ImageSpec((1, 8, 8), (0.5,), (0.5,)))
    assert seeded.class_order == tuple(np.random.RandomState(1993).permutation(10).tolist())
