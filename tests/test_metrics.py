import pytest

from benchmark import metrics

# R[i][j]: accuracy on task j after training through task i (hand-made, 3 tasks).
R = [
    [90.0, 10.0, 0.0],
    [70.0, 80.0, 5.0],
    [60.0, 75.0, 85.0],
]
SIZES = [100, 50, 50]


def test_avg_acc_is_mean_of_last_row():
    assert metrics.avg_acc(R) == pytest.approx((60 + 75 + 85) / 3)


def test_bwt_compares_final_with_just_learned():
    # ((60 - 90) + (75 - 80)) / 2
    assert metrics.bwt(R) == pytest.approx(-17.5)


def test_forgetting_uses_max_before_last_step():
    # task 0: max(90, 70) - 60 = 30; task 1: max(80) - 75 = 5
    assert metrics.forgetting(R) == pytest.approx(17.5)


def test_forgetting_differs_from_minus_bwt_when_accuracy_peaks_later():
    # task 0 improves after its own step (50 -> 80), then drops to 60: forgetting 20, bwt +10.
    matrix = [[50.0, 0.0, 0.0], [80.0, 70.0, 0.0], [60.0, 70.0, 90.0]]
    assert metrics.forgetting(matrix) == pytest.approx((20 + 0) / 2)
    assert metrics.bwt(matrix) == pytest.approx((10 + 0) / 2)


def test_avg_inc_acc_is_sample_weighted_per_step():
    a0 = 90.0
    a1 = (70 * 100 + 80 * 50) / 150
    a2 = (60 * 100 + 75 * 50 + 85 * 50) / 200
    assert metrics.avg_inc_acc(R, SIZES) == pytest.approx((a0 + a1 + a2) / 3)
    assert metrics.acc_pooled_last(R, SIZES) == pytest.approx(a2)


def test_single_task_gives_null_transfer_and_forgetting():
    summary = metrics.summarize([[42.0]], [10], {"head": [80.0, 70.0]})
    assert summary["bwt"] is None and summary["forgetting"] is None
    assert summary["avg_acc"] == 42.0 and summary["avg_inc_acc"] == 42.0 and summary["acc_pooled_last"] == 42.0
    assert summary["pretrain_drop"] == pytest.approx(10.0)


def test_pretrain_drop_first_minus_last_and_empty():
    assert metrics.pretrain_drop([80.0, 75.0, 60.0]) == pytest.approx(20.0)
    assert metrics.pretrain_drop([]) is None
    assert metrics.summarize(R, SIZES, {"head": []})["retained_pretrain_acc"] == []


def test_several_protocols_give_objects_keyed_by_protocol():
    summary = metrics.summarize(R, SIZES, {"head": [80.0, 70.0, 65.0], "knn": [60.0, 58.0, 59.0]})
    assert summary["retained_pretrain_acc"] == {"head": [80.0, 70.0, 65.0], "knn": [60.0, 58.0, 59.0]}
    assert summary["pretrain_drop"] == pytest.approx({"head": 15.0, "knn": 1.0})
    stored = {"metrics": summary, "retention_protocols": ["head", "knn"]}
    assert metrics.retention_curves(stored)["knn"] == [60.0, 58.0, 59.0]
    single = {"metrics": metrics.summarize(R, SIZES, {"knn": [50.0, 40.0, 45.0]}), "retention_protocols": ["knn"]}
    assert metrics.retention_curves(single) == {"knn": [50.0, 40.0, 45.0]}


@pytest.mark.parametrize("bad", [[], [[1.0, 2.0]], [[1.0], [2.0]]])
def test_non_square_matrix_is_rejected(bad):
    with pytest.raises(ValueError, match="square"):
        metrics.avg_acc(bad)


def test_seen_tasks_curve_averages_the_seen_part_of_each_row():
    assert metrics.seen_tasks_curve(R) == pytest.approx([90.0, 75.0, (60 + 75 + 85) / 3])
    assert metrics.seen_tasks_curve(R)[-1] == pytest.approx(metrics.avg_acc(R))
