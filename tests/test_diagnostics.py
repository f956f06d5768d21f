"""Every diagnostic on hand-built logits (counted by hand, or brute-forced / scikit-learn), then once through a real
run: the result holds them, consistent with its accuracy matrix, and a strategy's task selection is scored."""

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix

from benchmark import diagnostics as d
from benchmark.results import iter_results
from strategies.base import register
from strategies.linear import LinearProbe
from test_suite import suite

# Two class-incremental tasks: units 0, 1 (task 0) and 2, 3 (task 1); 3 + 2 test images.
UNITS = [[0, 1], [2, 3]]
SIZES = [3, 2]
LABELS = torch.tensor([0, 1, 0, 2, 3])
LOGITS = torch.tensor([
    [5.0, 1.0, 0.0, 6.0],  # label 0: predicted 3 (task 1); within task 0: 0, right
    [0.0, 2.0, 0.0, 0.0],  # label 1: predicted 1, right
    [1.0, 3.0, 0.0, 0.0],  # label 0: predicted 1, wrong in both
    [0.0, 0.0, 4.0, 1.0],  # label 2: predicted 2, right
    [7.0, 0.0, 1.0, 2.0],  # label 3: predicted 0 (task 0); within task 1: 3, right
])


def test_class_and_task_incremental_rows():
    assert d.accuracy_row(LOGITS, LABELS, SIZES) == pytest.approx([100 / 3, 50.0])
    assert d.task_incremental_row(LOGITS, LABELS, SIZES, UNITS) == pytest.approx([200 / 3, 100.0])
    # after task 0 only units 0, 1 exist: task 1 has no output to predict with
    assert d.task_incremental_row(LOGITS[:, :2], LABELS, SIZES, UNITS) == pytest.approx([200 / 3, 0.0])


def test_task_prediction_counts_predictions_in_the_own_task():
    assert d.task_prediction_acc(LOGITS, LABELS, SIZES, UNITS, upto=1) == pytest.approx(60.0)  # images 1, 2, 3
    assert d.task_prediction_acc(LOGITS, LABELS, SIZES, UNITS, upto=0) == pytest.approx(200 / 3)
    assert d.task_prediction_acc(LOGITS, LABELS, SIZES, [[0, 1, 2, 3]] * 2, upto=1) is None  # shared units


def test_task_selection_against_each_image_task():
    selected = torch.tensor([0, 1, 0, 1, 0])
    assert d.task_selection_acc(selected, SIZES, upto=1) == pytest.approx(60.0)
    assert d.task_selection_acc(selected, SIZES, upto=0) == pytest.approx(200 / 3)


def test_confusion_matrix_and_per_class_accuracy():
    entries = d.confusion_entries(LOGITS, LABELS)
    assert entries == [[0, 1, 1], [0, 3, 1], [1, 1, 1], [2, 2, 1], [3, 0, 1]]
    dense = d.dense_confusion(entries, 4)
    assert dense == confusion_matrix(LABELS.numpy(), LOGITS.argmax(1).numpy(), labels=range(4)).tolist()
    assert d.per_class_acc(entries, 4) == [0.0, 100.0, 100.0, 0.0]
    assert d.per_class_acc(entries, 5)[4] is None  # no test image of that class


def brute_force_ece(probabilities: np.ndarray, labels: np.ndarray, bins: int) -> float:
    """sum over equal-width bins [k/B, (k+1)/B) of |bin| / n * |accuracy - mean confidence|, by loops."""
    confidence, predicted = probabilities.max(1), probabilities.argmax(1)
    total = 0.0
    for k in range(bins):
        inside = [i for i in range(len(labels)) if k / bins <= confidence[i] < (k + 1) / bins]
        if inside:
            accuracy = np.mean([predicted[i] == labels[i] for i in inside])
            total += len(inside) / len(labels) * abs(accuracy - np.mean([confidence[i] for i in inside]))
    return 100 * total


def test_ece_against_a_brute_force_computation():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 6, generator=generator) * 2
    labels = torch.randint(0, 6, (300,), generator=generator)
    labels[:150] = logits[:150].argmax(1)  # half right for sure: a spread of confidence and accuracy
    expected = brute_force_ece(logits.double().softmax(1).numpy(), labels.numpy(), d.ECE_BINS)
    assert d.expected_calibration_error(logits, labels) == pytest.approx(expected, abs=1e-4)
    assert d.expected_calibration_error(logits, labels, bins=5) == pytest.approx(
        brute_force_ece(logits.double().softmax(1).numpy(), labels.numpy(), 5), abs=1e-4)


def test_ece_edge_cases():
    assert d.expected_calibration_error(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long)) == 0.0
    # a label beyond the outputs (a future class) is left out: the rest is perfectly confident and right
    logits = torch.tensor([[20.0, 0.0], [0.0, 20.0], [5.0, 0.0]])
    assert d.expected_calibration_error(logits, torch.tensor([0, 1, 2])) == pytest.approx(0.0, abs=1e-3)


R = [[90.0, 40.0, 30.0], [85.0, 88.0, 50.0], [80.0, 84.0, 86.0]]


def test_old_and_new_accuracy_after_each_task():
    old, new = d.old_new_acc(R, [100, 50, 50])
    assert old == pytest.approx([None, 85.0, (80 * 100 + 84 * 50) / 150]) and old[0] is None
    assert new == [90.0, 88.0, 86.0]


def test_forward_transfer_where_tasks_can_be_scored_early():
    domain = [[0, 1, 2]] * 3
    # task 1: R[0][1] = 40; task 2: (R[0][2] + R[1][2]) / 2 = 40
    assert d.forward_transfer(R, [3, 3, 3], domain) == pytest.approx(40.0)
    growing = [[0], [1], [2]]
    assert d.forward_transfer(R, [1, 2, 3], growing) is None  # a growing head cannot score a future task
    assert d.forward_transfer(R, [3, 3, 3], growing) == pytest.approx(40.0)  # a zero-shot head from the start
    # outputs for task 1 from step 0, for task 2 only from step 1: (40 + 50) / 2
    assert d.forward_transfer(R, [2, 3, 3], growing) == pytest.approx(45.0)


@register("linear_selecting_task_zero")
class SelectsTaskZero(LinearProbe):
    """A linear probe claiming to pick task 0's part for every image: its selection accuracy is countable."""

    selects_task = True

    def selected_task(self, x):
        return torch.zeros(len(x), dtype=torch.long, device=x.device)


def test_a_run_stores_consistent_diagnostics(write_suite, tmp_path):
    out = tmp_path / "out"
    assert suite(write_suite(strategies={"linear_selecting_task_zero": {"epochs": 1}}), out) == 0
    (result,) = iter_results(out)
    found, matrix, sizes = result["diagnostics"], result["accuracy_matrix"], result["test_sizes"]
    til = found["task_incremental_matrix"]
    assert all(til[i][j] >= matrix[i][j] for i in range(5) for j in range(5))  # the task id can only help
    assert result["metrics"]["task_incremental"]["avg_acc"] == pytest.approx(np.mean(til[-1]))
    assert found["new_acc"] == [matrix[i][i] for i in range(5)] and found["old_acc"][0] is None
    assert found["outputs"] == [2, 4, 6, 8, 10] and result["metrics"]["forward_transfer"] is None
    assert all(0 <= value <= 100 for value in found["ece"]) and result["metrics"]["ece_last"] == found["ece"][-1]
    dense = np.array(d.dense_confusion(found["confusion"], 10))
    assert dense.sum() == sum(sizes)
    assert 100 * np.trace(dense) / dense.sum() == pytest.approx(result["metrics"]["acc_pooled_last"])
    assert found["task_selection_acc"] == pytest.approx([100 * sizes[0] / sum(sizes[: i + 1]) for i in range(5)])
    assert result["class_order_seed"] == result["train_seed"] == result["seed"] == 1993
