"""Diagnostics of one run, computed from the logits the runner already takes on the test sets after each task
(no extra training, no extra pass except a strategy's own task selection): pure functions of tensors and matrices.

After each task i, `after_task` turns the logits on every task's test set (concatenated in task order, `sizes`
images each; output unit u is the stream's class `class_order[u]`) into:
- the task-incremental row: accuracy on task j's set with the logits restricted to task j's own output units (the
  task identity given at test time, as in task-incremental learning), beside the class-incremental row R[i];
- task-prediction accuracy: the share of images of the tasks seen so far whose predicted class belongs to their own
  task (class-incremental streams only; Kim et al. 2022 decompose class-incremental accuracy into this and the
  within-task accuracy);
- expected calibration error of the softmax over the seen tasks' images (torchmetrics, 15 equal-width bins, L1);
- the number of outputs, which says which tasks could be scored before they were trained (forward transfer).
At the end, `run_diagnostics` adds what follows from the matrices: old-task and new-task accuracy after each task,
forward transfer, the task-incremental metrics, and the confusion matrix and per-class accuracy after the last task.
All accuracies and the ECE are in %.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from benchmark.evaluation import predicted_labels
from benchmark.metrics import Matrix, matrix_metrics, pooled_acc

ECE_BINS = 15  # the usual choice (Guo et al. 2017)
Units = Sequence[Sequence[int]]  # per task, the output units of its classes


def _parts(values: torch.Tensor, sizes: Sequence[int]) -> tuple[torch.Tensor, ...]:
    return values.split(list(sizes))


def accuracy_row(logits: torch.Tensor, labels: torch.Tensor, sizes: Sequence[int]) -> list[float]:
    """Top-1 accuracy (%) on each set, every output competing (class-incremental): `R[i][j]` for all j."""
    correct = (predicted_labels(logits) == labels).float()
    return [100.0 * float(part.mean()) for part in _parts(correct, sizes)]


def task_incremental_row(logits: torch.Tensor, labels: torch.Tensor, sizes: Sequence[int],
                         task_units: Units) -> list[float]:
    """Accuracy (%) on each set j with the prediction taken among task j's own output units only:
    argmax_{u in U_j} logits[u]; units the model has no output for yet do not compete, and a task with none is 0."""
    row = []
    for j, (part, target) in enumerate(zip(_parts(logits, sizes), _parts(labels, sizes))):
        units = torch.tensor([u for u in task_units[j] if u < logits.shape[1]], dtype=torch.long)
        if len(units) == 0:
            row.append(0.0)
            continue
        predicted = units[part[:, units].argmax(1)]
        row.append(100.0 * float((predicted == target).float().mean()))
    return row


def disjoint(task_units: Units) -> bool:
    """Whether every output unit belongs to one task only (class-incremental streams)."""
    flat = [u for units in task_units for u in units]
    return len(flat) == len(set(flat))


def task_prediction_acc(logits: torch.Tensor, labels: torch.Tensor, sizes: Sequence[int], task_units: Units,
                        upto: int) -> Optional[float]:
    """Share (%) of the images of tasks 0..upto whose predicted unit is one of their own task's units; None when
    tasks share units (domain-incremental: every prediction is in the right task)."""
    if not disjoint(task_units):
        return None
    task_of_unit = {u: t for t, units in enumerate(task_units) for u in units}
    seen = sum(sizes[: upto + 1])
    predicted = predicted_labels(logits[:seen]).tolist()
    truth = [t for t in range(upto + 1) for _ in range(sizes[t])]
    return 100.0 * sum(task_of_unit.get(p) == t for p, t in zip(predicted, truth)) / seen


def task_selection_acc(selected: torch.Tensor, sizes: Sequence[int], upto: int) -> float:
    """Share (%) of the images of tasks 0..upto for which a strategy's selection (`Strategy.selected_task`) names
    the image's own task."""
    seen = sum(sizes[: upto + 1])
    truth = torch.repeat_interleave(torch.arange(upto + 1), torch.tensor(list(sizes[: upto + 1])))
    return 100.0 * float((selected[:seen].long().cpu() == truth).float().mean())


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """ECE (%) of the softmax: sum_b |B_b|/n · |acc(B_b) - conf(B_b)| over `bins` equal-width confidence bins
    (torchmetrics' `multiclass_calibration_error`, norm L1). Images whose class has no output yet are left out;
    with a single output every prediction is certain and right, so the ECE is 0."""
    known = labels < logits.shape[1]
    if logits.shape[1] < 2 or not bool(known.any()):
        return 0.0
    probabilities = logits[known].float().softmax(1)
    return 100.0 * float(multiclass_calibration_error(probabilities, labels[known], num_classes=logits.shape[1],
                                                      n_bins=bins, norm="l1"))


def after_task(logits: torch.Tensor, labels: torch.Tensor, sizes: Sequence[int], task_units: Units,
               index: int) -> dict[str, Any]:
    """Every per-task diagnostic after training task `index`, from the logits on all test sets."""
    seen = sum(sizes[: index + 1])
    return {
        "task_incremental_row": task_incremental_row(logits, labels, sizes, task_units),
        "task_prediction_acc": task_prediction_acc(logits, labels, sizes, task_units, index),
        "ece": expected_calibration_error(logits[:seen], labels[:seen]),
        "outputs": int(logits.shape[1]),
    }


def confusion_entries(logits: torch.Tensor, labels: torch.Tensor) -> list[list[int]]:
    """The confusion matrix (rows: true unit, columns: predicted unit) as its non-zero entries [true, predicted,
    count], sorted: compact for hundreds of classes. A prediction of -1 means no output existed."""
    pairs = torch.stack([labels, predicted_labels(logits)], 1)
    found, counts = pairs.unique(dim=0, return_counts=True)
    return [[int(t), int(p), int(c)] for (t, p), c in zip(found.tolist(), counts.tolist())]


def dense_confusion(entries: Sequence[Sequence[int]], num_classes: int) -> list[list[int]]:
    """The entries back as a num_classes x num_classes matrix (predictions outside the units are dropped)."""
    matrix = [[0] * num_classes for _ in range(num_classes)]
    for true, predicted, count in entries:
        if 0 <= predicted < num_classes:
            matrix[true][predicted] += count
    return matrix


def per_class_acc(entries: Sequence[Sequence[int]], num_classes: int) -> list[Optional[float]]:
    """Accuracy (%) per true unit: correct / all of that class (None for a class without test images)."""
    totals, correct = [0] * num_classes, [0] * num_classes
    for true, predicted, count in entries:
        totals[true] += count
        correct[true] += count if true == predicted else 0
    return [100.0 * c / n if n else None for c, n in zip(correct, totals)]


def old_new_acc(matrix: Matrix, test_sizes: Sequence[int]) -> tuple[list[Optional[float]], list[float]]:
    """After each task i: accuracy on the earlier tasks' test sets pooled by samples, sum_{j<i} `R[i][j]` n_j /
    sum_{j<i} n_j (None for i = 0), and on the new task's, `R[i][i]`. In a class-incremental stream these are the
    old and the new classes."""
    old = [pooled_acc(matrix[i], test_sizes, i - 1) if i else None for i in range(len(matrix))]
    return old, [matrix[i][i] for i in range(len(matrix))]


def forward_transfer(matrix: Matrix, outputs: Sequence[int], task_units: Units) -> Optional[float]:
    """ZSCL's "Transfer": mean over tasks j >= 1 of mean_{i<j} `R[i][j]`, the accuracy on a task before it was
    trained, counting only steps whose model had outputs for every class of task j (domain-incremental streams,
    zero-shot heads). None where no task could be scored early (a class-incremental growing head)."""
    per_task = []
    for j in range(1, len(matrix)):
        early = [matrix[i][j] for i in range(j) if max(task_units[j]) < outputs[i]]
        if early:
            per_task.append(sum(early) / len(early))
    return sum(per_task) / len(per_task) if per_task else None


def run_diagnostics(steps: Sequence[dict[str, Any]], matrix: Matrix, test_sizes: Sequence[int],
                    task_units: Units, confusion: Sequence[Sequence[int]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The result's `diagnostics` block and the metrics it adds (`task_incremental`, `forward_transfer`,
    `ece_last`, `task_selection_acc_last` for strategies that select), from the per-task diagnostics `steps` (`after_task`, plus `task_selection_acc` where the strategy
    selects a task-specific part) and the final confusion entries."""
    til_matrix = [step["task_incremental_row"] for step in steps]
    old, new = old_new_acc(matrix, test_sizes)
    num_classes = max(u for units in task_units for u in units) + 1
    outputs = [step["outputs"] for step in steps]
    transfer = forward_transfer(matrix, outputs, task_units)
    block = {
        "task_incremental_matrix": til_matrix,
        "task_prediction_acc": [step["task_prediction_acc"] for step in steps],
        "old_acc": old, "new_acc": new,
        "ece": [step["ece"] for step in steps],
        "outputs": outputs,
        "confusion": list(map(list, confusion)),
        "per_class_acc": per_class_acc(confusion, num_classes),
    }
    if "task_selection_acc" in steps[0]:
        block["task_selection_acc"] = [step["task_selection_acc"] for step in steps]
    metrics = {"task_incremental": matrix_metrics(til_matrix, test_sizes), "forward_transfer": transfer,
               "ece_last": block["ece"][-1]}
    if "task_selection_acc" in block:
        metrics["task_selection_acc_last"] = block["task_selection_acc"][-1]
    return block, metrics
