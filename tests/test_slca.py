"""SLCA's mechanisms on the tiny ViT: the 1/100 backbone learning rate, statistics stored once per class, classifier
alignment that changes only the heads and is undone when the next task starts, and exact resumption."""

import copy

import pytest
import torch

from benchmark.config import config_dict
from benchmark.runtime import Runtime
from benchmark.streams import build_stream
from strategies.base import build_strategy, strategy_config
from strategies.slca import SLCA
from test_checkpoints import assert_resuming_changes_nothing, crashing_once

RUNTIME = Runtime.resolve("cpu", "fp32", progress=False)
FAST = {"epochs": 1, "batch_size": 64, "ca_epochs": 2, "ca_samples": 32}


def slca(backbone, **params) -> SLCA:
    torch.manual_seed(0)
    return build_strategy("slca", {**FAST, **params}, copy.deepcopy(backbone.model), RUNTIME)


def test_presets_fill_only_what_the_user_left_out():
    reference = strategy_config("slca", {"preset": "reference"})
    assert (reference.epochs, reference.milestones, reference.batch_size) == (20, (18,), 128)
    assert (reference.lr, reference.backbone_lr_scale, reference.weight_decay) == (0.01, 0.01, 5e-4)
    imagenet_r = strategy_config("slca", {"preset": "reference-imagenet-r", "batch_size": 64})
    assert (imagenet_r.epochs, imagenet_r.milestones, imagenet_r.batch_size) == (50, (40,), 64)
    assert strategy_config("slca", config_dict(imagenet_r)) == imagenet_r  # a recorded config rebuilds itself


class RecordingSGD(torch.optim.SGD):
    built: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        RecordingSGD.built.append(self)


def test_slow_learner_trains_the_backbone_at_a_hundredth_of_the_head_lr(backbone, stream, monkeypatch):
    monkeypatch.setattr(torch.optim, "SGD", RecordingSGD)
    RecordingSGD.built = []
    strategy = slca(backbone, ca_epochs=0)
    strategy.train_task(stream.tasks[0])
    (optimizer,) = RecordingSGD.built
    backbone_group, head_group = optimizer.param_groups
    assert head_group["initial_lr"] == 0.01 and backbone_group["initial_lr"] == pytest.approx(0.01 / 100)
    assert [id(p) for p in backbone_group["params"]] == [id(p) for p in strategy.backbone.parameters()]
    assert [id(p) for p in head_group["params"]] == [id(strategy.heads.weight), id(strategy.heads.bias)]
    assert all(g["momentum"] == 0.9 and g["weight_decay"] == 5e-4 for g in optimizer.param_groups)


def class_statistics(strategy: SLCA, task) -> tuple[torch.Tensor, torch.Tensor]:
    """Means and covariances (+1e-4 I) of the task's classes under the strategy's current network."""
    strategy.eval()
    with torch.no_grad():
        features, labels = strategy.training_features(task)
    per_class = [features[labels == unit] for unit in task.labels]
    eye = torch.eye(features.shape[1], dtype=torch.float64)
    return (torch.stack([f.mean(0) for f in per_class]).float(),
            torch.stack([torch.cov(f.T) + 1e-4 * eye for f in per_class]).float())


def test_statistics_are_computed_once_per_class_and_never_refreshed(backbone, stream):
    strategy = slca(backbone, backbone_lr_scale=1.0)  # a fast backbone: old statistics would visibly change
    first, second = stream.tasks[:2]
    strategy.train_task(first)
    means, covariances = class_statistics(strategy, first)
    assert torch.allclose(strategy.statistics.means, means, atol=1e-6)
    assert torch.allclose(strategy.statistics.spreads, covariances, atol=1e-6)
    strategy.train_task(second)
    assert strategy.statistics.units.tolist() == [*first.labels, *second.labels]
    assert strategy.statistics.tasks.tolist() == [0, 0, 1, 1]
    statistics = strategy.statistics
    assert torch.equal(statistics.means[:2], means) and torch.equal(statistics.spreads[:2], covariances)
    now, _ = class_statistics(strategy, first)
    assert (now - means).abs().max() > 1e-3  # the backbone moved; the stored statistics stayed


def test_alignment_samples_shrunk_means_and_normalises_logits_per_head(backbone, stream):
    strategy = slca(backbone)
    for task in stream.tasks[:2]:
        strategy.train_task(task)
    shrink = torch.tensor([0.95, 0.95, 1.0, 1.0])  # 0.9 + 0.1 (t_c + 1) / (t + 1) at t = 1
    assert torch.allclose(strategy.statistics.distribution(strategy.statistics.growing_shrink(1)).mean,
                          strategy.statistics.means * shrink[:, None])
    logits = torch.tensor([[3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 6.0, 8.0]])  # head norms 5 and 0, then 0 and 10
    expected = torch.tensor([[12.0, 16.0, 0.0, 0.0], [0.0, 0.0, 12.0, 16.0]])  # / mean norm / tau 0.1
    assert torch.allclose(strategy.normalised_logits(logits), expected, atol=1e-4)


def test_alignment_changes_only_the_heads_and_is_undone_when_the_next_task_starts(backbone, stream):
    strategy = slca(backbone)
    strategy.train_task(stream.tasks[0])
    states = {}
    align, slow_learner = strategy.align_classifier, strategy.train_slow_learner

    def recorded_align(task_index):
        states["before"] = copy.deepcopy(strategy.state_dict())
        align(task_index)
        states["after"] = copy.deepcopy(strategy.state_dict())

    def recorded_slow_learner(task):
        states["start"] = strategy.heads.rows()  # after the restore and the new head
        slow_learner(task)

    strategy.align_classifier, strategy.train_slow_learner = recorded_align, recorded_slow_learner
    strategy.train_task(stream.tasks[1])
    before, after = states["before"], states["after"]
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == {"heads.frozen_weight", "heads.frozen_bias", "heads.weight", "heads.bias"}
    slow_weight = torch.cat([before["heads.frozen_weight"], before["heads.weight"]])
    slow_bias = torch.cat([before["heads.frozen_bias"], before["heads.bias"]])
    assert torch.equal(after["slow_weight"], slow_weight) and torch.equal(after["slow_bias"], slow_bias)

    aligned_weight, aligned_bias = strategy.heads.rows()
    assert not torch.equal(aligned_weight, slow_weight)
    images = torch.stack([stream.tasks[1].test[i][0] for i in range(4)])
    strategy.eval()
    with torch.no_grad():  # the runner's evaluation after the task sees the aligned heads
        assert torch.allclose(strategy.predict(images), strategy.features(images) @ aligned_weight.T + aligned_bias)

    strategy.train_task(stream.tasks[2])
    restored_weight, restored_bias = states["start"]
    assert torch.equal(restored_weight[:4], slow_weight) and torch.equal(restored_bias[:4], slow_bias)


def test_a_domain_incremental_stream_keeps_one_head_and_gets_a_gaussian_per_class_and_domain(backbone):
    stream = build_stream("mini-domain-digits", 1993, image_spec=backbone.image_spec, domains=["clean", "inverted"])
    strategy = slca(backbone)
    for task in stream.tasks:
        strategy.train_task(task)
    assert strategy.heads.sizes.tolist() == [10]
    assert strategy.statistics.units.tolist() == list(range(10)) * 2
    assert strategy.statistics.tasks.tolist() == [0] * 10 + [1] * 10


SLCA_CRASHES_ONCE = crashing_once(SLCA, "slca_crashes_once")


def test_a_resumed_slca_run_equals_an_uninterrupted_one(write_suite, tmp_path):
    assert_resuming_changes_nothing("slca_crashes_once", SLCA_CRASHES_ONCE, FAST, write_suite, tmp_path)
