"""Continual-learning metrics as pure functions of the accuracy matrix (no torch).

`R[i][j]` is the accuracy (%) on task j's test set after training through task i; T tasks, 0-indexed. Every metric
is computed here, from the full matrix, so every strategy is scored the same way. Frameworks name different
quantities alike; docs/metrics.md maps ours to theirs.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

Matrix = Sequence[Sequence[float]]


def _check(matrix: Matrix) -> int:
    size = len(matrix)
    if size == 0 or any(len(row) != size for row in matrix):
        raise ValueError(f"the accuracy matrix must be square and non-empty, got {size} rows")
    return size


def avg_acc(matrix: Matrix) -> float:
    """Mean over tasks of the final row: (1/T) sum_j `R[T-1][j]`."""
    size = _check(matrix)
    return sum(matrix[-1]) / size


def pooled_acc(row: Sequence[float], test_sizes: Sequence[int], upto: int) -> float:
    """Sample-weighted accuracy on the union of test sets 0..upto: sum_j `R[i][j]` n_j / sum_j n_j."""
    sizes = test_sizes[: upto + 1]
    return sum(acc * n for acc, n in zip(row[: upto + 1], sizes)) / sum(sizes)


def avg_inc_acc(matrix: Matrix, test_sizes: Sequence[int]) -> float:
    """Mean over steps i of A_i, the sample-pooled accuracy on the test sets of tasks 0..i after task i."""
    size = _check(matrix)
    return sum(pooled_acc(matrix[i], test_sizes, i) for i in range(size)) / size


def acc_pooled_last(matrix: Matrix, test_sizes: Sequence[int]) -> float:
    """Sample-pooled accuracy over all test samples after the last task (A_{T-1})."""
    size = _check(matrix)
    return pooled_acc(matrix[-1], test_sizes, size - 1)


def bwt(matrix: Matrix) -> Optional[float]:
    """Backward transfer (Lopez-Paz & Ranzato 2017): mean_{j<T-1} (`R[T-1][j]` - `R[j][j]`); None when T = 1."""
    size = _check(matrix)
    if size == 1:
        return None
    return sum(matrix[-1][j] - matrix[j][j] for j in range(size - 1)) / (size - 1)


def forgetting(matrix: Matrix) -> Optional[float]:
    """Chaudhry et al. 2018: mean_{j<T-1} (max_{l in [j, T-2]} `R[l][j]` - `R[T-1][j]`); None when T = 1."""
    size = _check(matrix)
    if size == 1:
        return None
    drops = [max(matrix[l][j] for l in range(j, size - 1)) - matrix[-1][j] for j in range(size - 1)]
    return sum(drops) / (size - 1)


def seen_tasks_curve(matrix: Matrix) -> list[float]:
    """Task-averaged accuracy over the tasks seen so far after each task: [mean_{j<=i} `R[i][j]` for i in 0..T-1]."""
    size = _check(matrix)
    return [sum(matrix[i][: i + 1]) / (i + 1) for i in range(size)]


def pretrain_drop(retained: Sequence[float]) -> Optional[float]:
    """Retained pre-training accuracy before training minus after the last task; None without numbers."""
    if len(retained) < 2:
        return None
    return retained[0] - retained[-1]


def matrix_metrics(matrix: Matrix, test_sizes: Sequence[int]) -> dict[str, object]:
    """Every metric of an accuracy matrix."""
    size = _check(matrix)
    if len(test_sizes) != size:
        raise ValueError(f"{len(test_sizes)} test sizes for {size} tasks")
    return {
        "avg_acc": avg_acc(matrix),
        "avg_inc_acc": avg_inc_acc(matrix, test_sizes),
        "acc_pooled_last": acc_pooled_last(matrix, test_sizes),
        "bwt": bwt(matrix),
        "forgetting": forgetting(matrix),
    }


def summarize(matrix: Matrix, test_sizes: Sequence[int],
              retained: Mapping[str, Sequence[float]]) -> dict[str, object]:
    """Every metric of one run. `retained` maps each retention protocol to T + 1 values (index 0 = before any
    training; empty: no numbers). With one protocol, `retained_pretrain_acc` is its list and `pretrain_drop` a
    number; with several, both are objects keyed by protocol name."""
    curves = {name: list(values) for name, values in retained.items()}
    drops = {name: pretrain_drop(values) for name, values in curves.items()}
    single = len(curves) == 1
    return {
        **matrix_metrics(matrix, test_sizes),
        "retained_pretrain_acc": next(iter(curves.values())) if single else curves,
        "pretrain_drop": next(iter(drops.values())) if single else drops,
    }


def retention_curves(result: Mapping[str, Any]) -> dict[str, list[float]]:
    """A stored result's retained pre-training accuracy per protocol, whichever of the two shapes it has."""
    retained = result["metrics"]["retained_pretrain_acc"]
    if isinstance(retained, Mapping):
        return {name: list(values) for name, values in retained.items()}
    return {result["retention_protocols"][0]: list(retained)}
