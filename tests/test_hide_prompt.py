"""HiDe-Prompt's mechanisms: task-identity inference from the frozen features (against the MLP written out in
numpy), the prompt of the inferred task at test time, the prompt momentum and the contrastive term against hand
computations, what two tasks of training store and leave alone, the presets with their schedules (against timm's
own schedulers, as the reference steps them) and CIFAR-100 input pipeline (against torchvision), and the parameter
counts on a random ViT-B/16 against the reference's shapes."""

import copy
import dataclasses
import math
import random

import numpy as np
import pytest
import timm
import torch
from timm.data.transforms import RandomResizedCropAndInterpolation
from timm.scheduler import CosineLRScheduler, StepLRScheduler
from torch.utils.data import Subset
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from benchmark import costs
from benchmark.config import config_dict
from benchmark.datasets.files import eval_transform, train_transform
from benchmark.errors import ConfigError
from benchmark.recipe import InputPipeline
from benchmark.runtime import Runtime
from benchmark.streams import Task
from strategies._loop import SCHEDULES
from strategies.base import build_strategy, strategy_config
from strategies.hide_prompt import contrastive
from test_prompts import small_vit
from test_recipes import VIT_B16, assert_same_pixels, hand_made_image, lr_per_epoch, run_spec

RUNTIME = Runtime.resolve("cpu", "fp32", progress=False)
CIFAR_MEAN, CIFAR_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)


def hide(model: torch.nn.Module, **params):
    torch.manual_seed(0)
    return build_strategy("hide_prompt", {"epochs": 1, "tii_epochs": 1, "ca_epochs": 1, **params},
                          copy.deepcopy(model), RUNTIME)


def fake_task(index: int, labels: tuple[int, ...], num_outputs: int) -> Task:
    """A task's bookkeeping without data (units, prompts and heads grow from these fields alone)."""
    return Task(index=index, name=f"task {index}", classes=labels, labels=labels, num_outputs=num_outputs,
                train=None, test=None)


def grow(strategy, tasks: list[tuple[int, ...]]) -> None:
    """What train_task adds before training, for each task: head rows, TII units, the task's prompt."""
    seen = 0
    for index, labels in enumerate(tasks):
        seen = max(seen, max(labels) + 1)
        strategy.head.grow(seen)
        strategy.add_units(fake_task(index, labels, seen))
        strategy.add_prompt()


def numpy_mapping(tii: torch.nn.Module, features: np.ndarray) -> np.ndarray:
    """LayerNorm(x + W2 GELU(W1 x + b1) + b2) in float64 numpy, GELU by erf, LayerNorm epsilon 1e-5."""
    p = {name: value.detach().double().numpy() for name, value in tii.named_parameters()}
    hidden = features @ p["fc1.weight"].T + p["fc1.bias"]
    hidden = 0.5 * hidden * (1 + np.vectorize(math.erf)(hidden / math.sqrt(2)))
    y = features + hidden @ p["fc2.weight"].T + p["fc2.bias"]
    return (y - y.mean(1, keepdims=True)) / np.sqrt(y.var(1, keepdims=True) + 1e-5) * p["norm.weight"] + p["norm.bias"]


@torch.no_grad()
def spread_units(tii: torch.nn.Module, features: np.ndarray, seed: int) -> None:
    """Random MLP weights, and a head scoring the centred mapped features against those of the first images, so
    that the images' best units differ (random rows would give every image one unit: the features of a barely
    trained ViT differ little from image to image)."""
    torch.manual_seed(seed)
    for name, parameter in tii.named_parameters():
        parameter.normal_(0, 0.2) if name.endswith("weight") else parameter.zero_()
    mapped = numpy_mapping(tii, features)
    rows = mapped[:tii.head.weight.shape[0]] - mapped.mean(0)  # score_j(x) = (mapped(x) - mean) . row_j
    tii.head.weight.copy_(torch.from_numpy(rows))
    tii.head.bias.copy_(torch.from_numpy(-mapped.mean(0) @ rows.T))


def test_task_identity_is_the_task_of_the_best_unit_on_the_frozen_features(backbone, stream):
    """Three tasks of 2, 2 and 3 classes: unit -> task is 0 0 1 1 2 2 2; the inferred task is that of the argmax of
    the MLP head on the backbone's own pre-logits (computed here by the unmodified model and numpy)."""
    strategy = hide(backbone.model, tii_hidden=2).eval()
    grow(strategy, [(0, 1), (2, 3), (4, 5, 6)])
    assert strategy.unit_tasks.tolist() == [0, 0, 1, 1, 2, 2, 2]
    images = torch.stack([stream.tasks[i].test[j][0] for i in range(5) for j in range(4)])
    with torch.no_grad():
        query = backbone.model.forward_head(backbone.model.forward_features(images), pre_logits=True).double().numpy()
    spread_units(strategy.tii, query, seed=5)
    p = {name: value.detach().double().numpy() for name, value in strategy.tii.head.named_parameters()}
    expected = np.array([0, 0, 1, 1, 2, 2, 2])[(numpy_mapping(strategy.tii, query) @ p["weight"].T + p["bias"]).argmax(1)]
    with torch.no_grad():
        inferred = strategy.selected_task(images)
    assert inferred.tolist() == expected.tolist()
    assert len(set(expected.tolist())) >= 2  # the case tells tasks apart


def test_a_domain_incremental_stream_gets_one_unit_per_task_and_class():
    strategy = hide(small_vit())
    grow(strategy, [(0, 1, 2), (0, 1, 2)])
    assert strategy.unit_tasks.tolist() == [0, 0, 0, 1, 1, 1] and strategy.head.num_outputs == 3
    assert strategy.add_units(fake_task(2, (0, 1, 2), 3)) == 6  # units of the earlier tasks


def test_prediction_takes_the_prompt_of_the_inferred_task(backbone, stream):
    strategy = hide(backbone.model).eval()
    grow(strategy, [(0, 1), (2, 3), (4, 5)])
    images = torch.stack([stream.tasks[i].test[j][0] for i in range(5) for j in range(2)])
    with torch.no_grad():
        strategy.old_prompts = torch.randn_like(strategy.old_prompts)  # each task's prompt its own (not copies)
        spread_units(strategy.tii, strategy.prompted.query(images).double().numpy(), seed=2)
        tasks = strategy.selected_task(images)
        assert len(set(tasks.tolist())) >= 2
        prompts = torch.cat([strategy.old_prompts, strategy.prompt])
        logits = strategy.predict(images)
        for i, task in enumerate(tasks.tolist()):
            alone = strategy.head(strategy.prompted_features(images[i: i + 1], prompts[task]))
            assert torch.allclose(logits[i], alone[0], atol=1e-5)
            other = strategy.head(strategy.prompted_features(images[i: i + 1], prompts[(task + 1) % 3]))
            assert not torch.allclose(logits[i], other[0], atol=1e-3)


def test_prompts_start_uniform_then_as_a_copy_and_mix_with_the_earlier_ones():
    strategy = hide(small_vit(), prompt_momentum=0.25)
    grow(strategy, [(0, 1)])
    first = strategy.prompt.detach().clone()
    assert first.min() >= -1 and first.max() <= 1 and first.std() > 0.4  # U(-1, 1)
    assert torch.equal(strategy.mixed_prompt(), strategy.prompt[0])  # nothing to mix with yet
    strategy.add_prompt()
    assert torch.equal(strategy.prompt, first) and torch.equal(strategy.old_prompts, first)
    with torch.no_grad():
        strategy.prompt.fill_(2.0)
        strategy.old_prompts = torch.stack([torch.full_like(first[0], -1.0), torch.full_like(first[0], 3.0)])
    assert torch.allclose(strategy.mixed_prompt(), torch.full_like(first[0], 0.75 * 2.0 + 0.25 * 1.0))


def test_the_contrastive_term_by_hand():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    features = torch.tensor([[1.0, 1.0], [-1.0, 0.5]])
    rows = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [-1.0, 0.5]])
    similarity = rows @ rows.T / 0.8
    expected = np.mean([np.log(np.exp(row).sum()) - row[i] for i, row in enumerate(similarity)])
    assert math.isclose(float(contrastive(features, anchors)), expected, rel_tol=1e-6)
    alone = similarity[2:, 2:]
    expected_alone = np.mean([np.log(np.exp(row).sum()) - row[i] for i, row in enumerate(alone)])
    assert math.isclose(float(contrastive(features, anchors[:0])), expected_alone, rel_tol=1e-6)


def test_two_tasks_store_statistics_and_leave_the_first_prompt_alone(backbone, stream):
    strategy = hide(backbone.model, centroids=2, ca_samples=8, tii_ca_samples=8)
    tasks = [dataclasses.replace(task, train=Subset(task.train, range(0, len(task.train), 6))) for task in stream.tasks[:2]]
    strategy.train_task(tasks[0])
    first = strategy.prompt.detach().clone()
    strategy.train_task(tasks[1])
    assert torch.equal(strategy.old_prompts[0], first[0]) and not torch.equal(strategy.prompt, first)
    assert strategy.unit_tasks.tolist() == [0, 0, 1, 1]
    for store, labels in ((strategy.uninstructed, [0, 1, 2, 3]), (strategy.instructed, [0, 1, 2, 3])):
        assert sorted(set(store.units.tolist())) == labels  # in a class-incremental stream, units are classes
        assert all(store.units.tolist().count(u) <= 2 for u in labels) and set(store.tasks.tolist()) == {0, 1}
    strategy.eval()
    images = torch.stack([stream.tasks[i].test[j][0] for i in (0, 1) for j in range(4)])
    with torch.no_grad():
        assert set(strategy.selected_task(images).tolist()) <= {0, 1}
        assert torch.allclose(strategy.predict(images), strategy.classify(strategy.features(images)))


def test_presets():
    reference = strategy_config("hide_prompt", {"preset": "reference"})
    assert (reference.epochs, reference.batch_size, reference.schedule, reference.grad_clip) == (50, 24, "hide-step", 1.0)
    assert math.isclose(reference.lr, 0.03 * 24 / 256) and reference.head_lr_scale == 0.1
    assert (reference.e_blocks, reference.e_length, reference.contrast, reference.prompt_momentum) == (
        (0, 1, 2, 3, 4), 5, 0.1, 0.01)
    assert (reference.tii_epochs, reference.ca_epochs, reference.ca_lr, reference.centroids) == (20, 30, 0.005, 10)
    assert math.isclose(reference.tii_lr, 0.0005 * 24 / 256) and math.isclose(reference.tii_ca_lr, 0.005 * 24 / 256)
    assert (reference.ca_samples, reference.tii_ca_samples) == (120, 24)
    assert (reference.input, reference.precision) == ("cifar-normalised-bicubic", "fp32")
    imagenet_r = strategy_config("hide_prompt", {"preset": "reference-imagenet-r"})
    assert (imagenet_r.epochs, imagenet_r.schedule, imagenet_r.e_length, imagenet_r.contrast, imagenet_r.input) == (
        150, "hide-cosine", 20, 0.5, "unnormalised")
    assert strategy_config("hide_prompt", config_dict(reference)) == reference
    with pytest.raises(ConfigError, match="prompt_momentum"):
        strategy_config("hide_prompt", {"prompt_momentum": 1.0})


def test_the_step_schedule_is_timms_as_the_reference_steps_it():
    """timm's StepLRScheduler(decay_t=30, decay_rate=0.1), `step(epoch)` after each epoch (the reference's loop)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = StepLRScheduler(optimizer, decay_t=30, decay_rate=0.1)
    theirs = []
    for epoch in range(50):
        theirs.append(optimizer.param_groups[0]["lr"])
        scheduler.step(epoch)
    config = dataclasses.replace(strategy_config("hide_prompt", {"preset": "reference"}).train_config(), lr=1.0)
    assert np.allclose(lr_per_epoch(config), theirs, rtol=1e-6)
    assert theirs[30] == 1.0 and math.isclose(theirs[31], 0.1)  # the decay starts one epoch late


def test_the_cosine_schedule_is_timms_per_parameter_group():
    """timm's CosineLRScheduler(t_initial=150, lr_min=1e-5) on the prompt's and the head's lr (a tenth): the floor is
    absolute, so the two groups' lrs are not proportional."""
    def groups():
        return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.0028125},
                                {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.00028125}], lr=1.0)
    reference, ours = groups(), groups()
    scheduler = CosineLRScheduler(reference, t_initial=150, lr_min=1e-5)
    schedule = SCHEDULES["hide-cosine"](ours, 150, 1)  # one step per epoch
    for epoch in range(150):
        assert np.allclose([g["lr"] for g in ours.param_groups], [g["lr"] for g in reference.param_groups],
                           rtol=1e-6), epoch
        scheduler.step(epoch)
        ours.step()
        schedule.step()


def test_the_cifar_input_pipeline_is_the_references():
    """Test: Resize(256, bicubic) + CenterCrop(224), CIFAR-100's mean/std; train: torchvision's RandomResizedCrop(224,
    bicubic, scale (0.08, 1)) box, flip, the same normalisation (its brightness jitter is a stated deviation)."""
    spec = run_spec("hide_prompt", "reference")
    normalise = T.Normalize(CIFAR_MEAN, CIFAR_STD)
    image = hand_made_image(32, 32)
    expected = T.Compose([T.Resize(256, InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(), normalise])
    assert_same_pixels(eval_transform(spec)(image), expected(image), std=min(CIFAR_STD))
    ours = train_transform(spec, "rrc_flip")
    for draw in range(10):
        random.seed(draw)
        box = RandomResizedCropAndInterpolation.get_params(image, (0.08, 1.0), (3 / 4, 4 / 3))
        torch.manual_seed(draw)
        flip = bool(torch.rand(1) < 0.5)
        crop = TF.resized_crop(image, *box, [224, 224], InterpolationMode.BICUBIC)
        expected = normalise(TF.to_tensor(TF.hflip(crop) if flip else crop))
        random.seed(draw)
        torch.manual_seed(draw)
        assert_same_pixels(ours(image), expected, std=min(CIFAR_STD))


def test_a_pipelines_own_normalisation_must_fit_the_backbone():
    with pytest.raises(ConfigError, match="mean"):
        InputPipeline(source="x", mean=(0.5, 0.5, 0.5))
    with pytest.raises(ConfigError, match="mean"):
        InputPipeline(source="x", normalize=False, mean=(0.5,), std=(0.5,))
    with pytest.raises(ConfigError, match="2 channels"):
        InputPipeline(source="x", mean=(0.5, 0.5), std=(1.0, 1.0)).image_spec(VIT_B16)


def test_parameter_counts_on_vit_b16_match_the_references_shapes():
    """10 tasks of 10 classes on a random ViT-B/16. The reference's trainable tensors: the E-prompt pool
    (5 blocks, 2, 10 tasks, 5 tokens, 12 heads, 64) = 384,000 and the head Linear(768, 100) = 76,900 in the prompt
    stage (460,900); in the TII stage MlpMapping(768, [2]) = Linear(768, 1536) + Linear(1536, 768) + LayerNorm(768)
    = 2,363,136 and its head, 76,900. The paper states no parameter count for HiDe-Prompt."""
    torch.manual_seed(0)
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    strategy = build_strategy("hide_prompt", {"preset": "reference"}, model, RUNTIME)
    grow(strategy, [tuple(range(10 * t, 10 * t + 10)) for t in range(10)])
    prompts = strategy.old_prompts.numel() + strategy.prompt.numel()
    assert prompts == 5 * 2 * 10 * 5 * 12 * 64 == 384_000
    assert sum(p.numel() for p in strategy.head.parameters()) == 768 * 100 + 100 == 76_900
    mlp = (768 * 1536 + 1536) + (1536 * 768 + 768) + 2 * 768
    assert mlp == 2_363_136 and sum(p.numel() for p in strategy.tii.parameters()) == mlp + 76_900
    counts = costs.parameter_counts(strategy)
    assert counts["params_trainable"] == 38_400 + 76_900 + mlp + 76_900  # the current task's prompt trains
    assert counts["params_added"] == 384_000 + 76_900 + mlp + 76_900 + 100  # + each TII unit's task
