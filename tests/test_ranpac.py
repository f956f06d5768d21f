"""RanPAC against independent computations: the ridge readout equals scikit-learn's ridge on the same projected
features of every task seen (so accumulating G and Q task by task equals solving once on all the data), lambda is
the grid value a brute-force search with numpy picks, and the random projection stays frozen and comes back from a
checkpoint."""

import copy

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge

from benchmark.checkpoints import load_resizing
from benchmark.errors import ConfigError
from benchmark.evaluation import as_tensors
from benchmark.runtime import Runtime
from strategies.base import build_strategy, strategy_config
from strategies.ranpac import RIDGE_GRID, RanPAC, select_ridge
from test_checkpoints import assert_resuming_changes_nothing, crashing_once

RUNTIME = Runtime.resolve("cpu", "fp32", progress=False)
TRAINING_FREE = {"epochs": 0, "projection_dim": 64}  # phase 1 off: the features are the pre-trained ones


def brute_force_ridge(H: np.ndarray, Y: np.ndarray, fit: int, criterion: str) -> float:
    """Every grid value solved with numpy on the first `fit` rows and scored on the rest; first best wins."""
    scores = []
    for ridge in RIDGE_GRID:
        W = np.linalg.solve(H[:fit].T @ H[:fit] + ridge * np.eye(H.shape[1]), H[:fit].T @ Y[:fit])
        predicted = H[fit:] @ W
        scores.append(((predicted - Y[fit:]) ** 2).mean() if criterion == "mse"
                      else -(predicted.argmax(1) == Y[fit:].argmax(1)).mean())
    return RIDGE_GRID[int(np.argmin(scores))]


@pytest.mark.parametrize("rows", [30, 200])  # fewer rows than columns (the dual form) and more
@pytest.mark.parametrize("criterion", ["mse", "accuracy"])
def test_lambda_selection_is_the_brute_force_choice(rows, criterion):
    rng = np.random.default_rng(rows)
    H = np.maximum(rng.normal(size=(rows, 50)) @ rng.normal(size=(50, 50)), 0)  # ReLU features, correlated
    labels = (H[:, :3] @ rng.normal(size=(3, 4)) + rng.normal(size=(rows, 4))).argmax(1)
    Y = np.eye(4)[labels]
    fit = int(rows * 0.8)
    chosen = select_ridge(torch.from_numpy(H), torch.from_numpy(Y), 0.2, criterion)
    assert chosen == brute_force_ridge(H, Y, fit, criterion)


def hidden_features(strategy: RanPAC, backbone, tasks) -> tuple[np.ndarray, np.ndarray]:
    """ReLU(f W_rand) of the pre-trained features of every training image of `tasks`, computed here in float32 as
    the strategy computes them (a ridge at lambda 10^-8 amplifies any rounding difference), then as float64."""
    images, labels = zip(*(as_tensors(task.train_unaugmented) for task in tasks))
    model = copy.deepcopy(backbone.model).eval()
    model.reset_classifier(0)
    with torch.no_grad():
        features = model(torch.cat(images)).numpy()
    return np.maximum(features @ strategy.projection.numpy(), 0).astype(np.float64), torch.cat(labels).numpy()


def test_readout_is_the_closed_form_ridge_over_every_task_seen(backbone, stream):
    torch.manual_seed(3)
    strategy = build_strategy("ranpac", TRAINING_FREE, copy.deepcopy(backbone.model), RUNTIME)
    strategy.train_task(stream.tasks[0])
    projection = strategy.projection.clone()
    expected = torch.Generator().manual_seed(3)
    assert torch.equal(projection, torch.randn(backbone.model.num_features, 64, generator=expected))
    order = torch.randperm(len(stream.tasks[0].train), generator=expected).numpy()  # the held-out split's order
    H0, labels0 = hidden_features(strategy, backbone, stream.tasks[:1])
    Y0 = np.eye(2)[labels0][order]
    assert strategy.ridges.tolist() == [brute_force_ridge(H0[order], Y0, int(len(order) * 0.8), "mse")]

    for task in stream.tasks[1:3]:
        strategy.train_task(task)
    assert torch.equal(strategy.projection, projection)  # frozen across tasks
    H, labels = hidden_features(strategy, backbone, stream.tasks[:3])
    Y = np.eye(6)[labels]
    ridge = float(strategy.ridges[-1])
    sklearn_W = Ridge(alpha=ridge, fit_intercept=False, solver="cholesky").fit(H, Y).coef_  # (classes, M)
    np.testing.assert_allclose(strategy.gram.numpy(), H.T @ H, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(strategy.targets.numpy(), H.T @ Y, rtol=1e-5, atol=1e-3)
    # the same fitted function (W itself is as ill-conditioned as G + lambda I when lambda is small)
    fitted, expected_fit = H @ strategy.readout.double().numpy().T, H @ sklearn_W.T
    np.testing.assert_allclose(fitted, expected_fit, atol=1e-3 * np.abs(expected_fit).max())

    test_images, _ = as_tensors(stream.tasks[2].test)
    strategy.eval()
    with torch.no_grad():
        logits = strategy.predict(test_images[:8]).double().numpy()
    model = copy.deepcopy(backbone.model).eval()
    model.reset_classifier(0)
    with torch.no_grad():
        h = np.maximum(model(test_images[:8]).double().numpy() @ projection.double().numpy(), 0)
    expected_logits = h @ sklearn_W.T  # official raw inference
    np.testing.assert_allclose(logits, expected_logits, atol=1e-3 * np.abs(expected_logits).max())


def test_cosine_inference_normalises_both_sides(backbone, stream):
    torch.manual_seed(0)
    strategy = build_strategy("ranpac", {**TRAINING_FREE, "inference": "cosine"}, copy.deepcopy(backbone.model),
                              RUNTIME)
    strategy.train_task(stream.tasks[0])
    images, _ = as_tensors(stream.tasks[0].test)
    strategy.eval()
    with torch.no_grad():
        h = strategy.hidden(strategy.features(images[:8])).double()
        logits = strategy.predict(images[:8]).double()
    W = strategy.readout.double()
    expected = (h / h.norm(dim=1, keepdim=True)) @ (W / W.norm(dim=1, keepdim=True)).T
    assert torch.allclose(logits, expected, atol=1e-5)


def test_statistics_and_projection_load_into_a_fresh_strategy(backbone, stream):
    torch.manual_seed(0)
    trained = build_strategy("ranpac", TRAINING_FREE, copy.deepcopy(backbone.model), RUNTIME)
    for task in stream.tasks[:2]:
        trained.train_task(task)
    fresh = build_strategy("ranpac", TRAINING_FREE, copy.deepcopy(backbone.model), RUNTIME)
    assert fresh.projection.numel() == 0  # drawn at the first task: only a checkpoint can bring it back
    load_resizing(fresh, trained.state_dict())
    for name in ("projection", "gram", "targets", "readout", "ridges"):
        assert torch.equal(getattr(fresh, name), getattr(trained, name))
    memory = trained.report()["ranpac_memory_mb"]
    assert memory["G"] == 64 * 64 * 8 / 2**20 and memory["projection"] == backbone.model.num_features * 64 * 4 / 2**20


RANPAC_CRASHES_ONCE = crashing_once(RanPAC, "ranpac_crashes_once")


def test_a_resumed_ranpac_run_equals_an_uninterrupted_one(write_suite, tmp_path):
    """Phase 1, the projection and the statistics all come back from the checkpoint."""
    assert_resuming_changes_nothing("ranpac_crashes_once", RANPAC_CRASHES_ONCE,
                                    {"epochs": 1, "projection_dim": 64}, write_suite, tmp_path)


def test_bad_ranpac_settings_name_the_key():
    with pytest.raises(ConfigError, match="strategies.ranpac.inference: must be one of raw, cosine"):
        strategy_config("ranpac", {"inference": "softmax"})
    with pytest.raises(ConfigError, match="strategies.ranpac.projection_dim: must be >= 0"):
        strategy_config("ranpac", {"projection_dim": -1})
