"""InfLoRA's subspace record on a hand case: four tasks' covariances with known spectra in an 8-dimensional input
space, the record after each task worked out by hand from the reference's rules (update_DualGPM), including its
threshold schedule and the switch from the used subspace ("remove") to the free one ("retain") past d / 2."""

import pytest
import torch

from strategies._dualgpm import SubspaceRecord, threshold

DIM = 8
Q = torch.linalg.qr(torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(0), dtype=torch.float64)).Q


def covariance(singular_values: dict[int, float]) -> torch.Tensor:
    """Q diag(s) Q^T: singular value s_i along the basis direction e_i = Q[:, i]."""
    diagonal = torch.zeros(DIM, dtype=torch.float64)
    for index, value in singular_values.items():
        diagonal[index] = value
    return Q @ torch.diag(diagonal) @ Q.T


def projector_onto(indices: list[int]) -> torch.Tensor:
    basis = Q[:, indices]
    return basis @ basis.T


def test_the_threshold_moves_linearly_towards_one():
    assert [threshold(t, 4, 0.95) for t in range(4)] == pytest.approx([0.95, 0.9625, 0.975, 0.9875])
    assert threshold(0, 10, 0.98) == 0.98 and threshold(5, 10, 0.98) == pytest.approx(0.99)


def test_the_record_grows_as_the_reference_rules_say():
    record = SubspaceRecord(layers=1, dim=DIM)
    steps = [
        # Task 0, threshold 0.95. Energies (squared singular values) 100, 25, 1, 0.01 of 126.01; cumulative shares
        # 0.794, 0.992, ...: one share is below 0.95, so the record keeps e0 only (the reference's count, no +1).
        ({0: 10, 1: 5, 2: 1, 3: 0.1}, [0], False),
        # Task 1, threshold 0.9625. Energies 16 (e0), 9 (e1), 4 (e2) of 29: 16/29 = 0.552 already inside; adding
        # e1 (0.310) gives 0.862 < 0.9625, adding e2 (0.138) gives 1.0: two directions join -> e0, e1, e2.
        ({0: 4, 1: 3, 2: 2}, [0, 1, 2], False),
        # Task 2, threshold 0.975. Energies 36 (e3), 25 (e4), 1 (e0), 0.25 (e5) of 62.25: inside 0.016; + e3 (0.578)
        # = 0.594, + e4 (0.402) = 0.996 >= 0.975: e3, e4 join. 5 columns > d / 2 = 4: the record becomes the free
        # complement e5, e6, e7 ("retain").
        ({3: 6, 4: 5, 0: 1, 5: 0.5}, [5, 6, 7], True),
        # Task 3, threshold 0.9875 (1 - threshold = 0.0125). Energies 9 (e5), 4 (e0), 1 (e6), 0.09 (e7) of 14.09; in
        # the free part 10.09 / 14.09 = 0.716; taking e5 out leaves 0.077 >= 0.0125, taking e6 out leaves 0.0064
        # < 0.0125: stop. Free: e7.
        ({5: 3, 0: 2, 6: 1, 7: 0.3}, [7], True),
    ]
    for task, (spectrum, expected, retain) in enumerate(steps):
        record.update(0, covariance(spectrum), threshold(task, 4, 0.95))
        basis = record.basis(0).double()
        assert basis.shape == (DIM, len(expected)) and bool(record.retain[0]) == retain, f"after task {task}"
        assert torch.allclose(basis @ basis.T, projector_onto(expected), atol=1e-6), f"after task {task}"
    used = [index for index in range(DIM) if index != 7]
    assert torch.allclose(record.used_projector(0), projector_onto(used), atol=1e-6)


def test_restricting_to_the_free_subspace_in_both_kinds():
    record = SubspaceRecord(layers=1, dim=DIM)
    record.update(0, covariance({0: 10, 1: 5}), 0.95)  # remove: e0
    matrix = torch.randn(DIM, 3, dtype=torch.float64)
    assert torch.allclose(record.restrict(0, matrix), matrix - projector_onto([0]) @ matrix, atol=1e-6)
    record.retain[0] = True  # the same basis read as the free subspace
    assert torch.allclose(record.restrict(0, matrix), projector_onto([0]) @ matrix, atol=1e-6)
