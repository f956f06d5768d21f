"""The leaderboard's statistics on hand data, against closed forms (Student t with 1 and 2 degrees of freedom has
an elementary CDF) and scipy: intervals with 1, 2 and 3 seeds, the paired t-test, Holm's correction, the pairing."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from reports.statistics import compare_to_reference, holm, paired_by_seed, paired_t_test, t_interval

T_975_DF1 = math.tan(math.pi * (0.975 - 0.5))  # Cauchy quantile: 12.7062...
T_975_DF2 = math.sqrt(2 * 0.95 ** 2 / (1 - 0.95 ** 2))  # df 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2)), so 4.3027...


def test_no_interval_with_one_seed_and_none_from_nan():
    assert all(math.isnan(v) for v in t_interval([71.0]))
    assert all(math.isnan(v) for v in t_interval([]))
    assert all(math.isnan(v) for v in t_interval([71.0, float("nan")]))  # one finite value


def test_two_seeds_interval_uses_the_cauchy_quantile():
    low, high = t_interval([60.0, 70.0])
    half = T_975_DF1 * np.std([60.0, 70.0], ddof=1) / math.sqrt(2)  # 12.706 * 7.071 / 1.414 = 63.53
    assert (low, high) == pytest.approx((65.0 - half, 65.0 + half))
    assert half == pytest.approx(63.531, abs=1e-3)


def test_three_seeds_interval_closed_form_and_scipy():
    values = [48.0, 50.0, 55.0]
    mean, s = np.mean(values), np.std(values, ddof=1)
    low, high = t_interval(values)
    assert (low, high) == pytest.approx((mean - T_975_DF2 * s / math.sqrt(3), mean + T_975_DF2 * s / math.sqrt(3)))
    assert (low, high) == pytest.approx(stats.t.interval(0.95, 2, loc=mean, scale=stats.sem(values)))


def test_equal_values_give_a_point_not_nan():
    assert t_interval([50.0, 50.0, 50.0]) == (50.0, 50.0)


def test_paired_t_test_against_the_closed_form_with_two_and_one_degrees_of_freedom():
    # d = [1, 2, 3]: t = 2 / (1 / sqrt 3) = sqrt 12, df 2; two-sided p = 1 - t / sqrt(2 + t^2)
    t = math.sqrt(12)
    assert paired_t_test([11.0, 22.0, 33.0], [10.0, 20.0, 30.0]) == pytest.approx(1 - t / math.sqrt(2 + t * t))
    # d = [1, 3]: t = 2 / (sqrt 2 / sqrt 2) = 2, df 1 (Cauchy): p = 1 - (2 / pi) arctan(t)
    assert paired_t_test([11.0, 23.0], [10.0, 20.0]) == pytest.approx(1 - 2 / math.pi * math.atan(2.0))
    assert paired_t_test([11.0, 23.0, 30.5, 41.0], [10.0, 20.0, 31.0, 40.0]) == pytest.approx(
        stats.ttest_rel([11.0, 23.0, 30.5, 41.0], [10.0, 20.0, 31.0, 40.0]).pvalue)


def test_paired_t_test_edge_cases():
    assert math.isnan(paired_t_test([1.0], [2.0]))  # one pair: no test
    assert paired_t_test([5.0, 6.0], [5.0, 6.0]) == 1.0  # identical: nothing tells them apart
    assert paired_t_test([6.0, 7.0, 8.0], [5.0, 6.0, 7.0]) == 0.0  # always exactly one point better
    with pytest.raises(ValueError, match="as many values"):
        paired_t_test([1.0, 2.0], [1.0])


def test_holm_on_a_hand_case():
    # sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 = 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm([0.5, float("nan"), 0.02])  # NaN is not a comparison: m = 2
    assert adjusted[0] == pytest.approx(0.5) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04)
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1
    # Holm rejects what Bonferroni rejects, and here more: 0.03 * 2 > 0.05 but 0.03 * 1 after 0.01 * 2 = 0.02
    assert [p < 0.05 for p in holm([0.01, 0.03])] == [True, True]


def runs_frame(rows):
    return pd.DataFrame(rows, columns=["stream", "backbone", "strategy", "config_id", "seed", "class_order",
                                       "avg_acc"])


def test_pairing_needs_the_same_seed_and_the_same_class_order():
    reference = runs_frame([("s", "b", "a", "x", 0, "1,0", 50.0), ("s", "b", "a", "x", 1, "0,1", 60.0),
                            ("s", "b", "a", "x", 2, "1,0", 70.0)])
    other = runs_frame([("s", "b", "c", "y", 1, "0,1", 58.0), ("s", "b", "c", "y", 0, "1,0", 49.0),
                        ("s", "b", "c", "y", 2, "0,1", 10.0), ("s", "b", "c", "y", 3, "1,0", 10.0)])
    ref_values, values = paired_by_seed(reference, other, "avg_acc")
    # seed 2: class orders differ (not a pair); seed 3: no reference run
    assert ref_values.tolist() == [50.0, 60.0] and values.tolist() == [49.0, 58.0]


def test_every_strategy_is_compared_with_the_best_and_holm_corrected():
    rows = []
    for seed, order in ((0, "0,1"), (1, "1,0"), (2, "0,1")):
        rows += [("s", "b", "best", "x", seed, order, 80.0 + seed), ("s", "b", "close", "y", seed, order,
                 [79.0, 82.5, 81.5][seed]), ("s", "b", "far", "z", seed, order, 50.0 + 1.1 * seed),
                 ("s", "b", "alone", "w", seed, "9,9", 90.0)]  # other class orders: nothing to pair with
    compared = compare_to_reference(runs_frame(rows), ["strategy", "config_id"], ["stream", "backbone"], "avg_acc")
    table = compared.set_index("strategy")
    # "alone" has the best mean, so it is the reference, but no other run saw its class order: nothing is paired
    assert set(table["reference"]) == {"alone"} and bool(table.loc["alone", "indistinguishable_from_best"])
    assert (table.drop("alone")["n_pairs"] == 0).all()
    assert table.drop("alone")["indistinguishable_from_best"].isna().all()

    rows = [row for row in rows if row[2] != "alone"]
    table = compare_to_reference(runs_frame(rows), ["strategy", "config_id"], ["stream", "backbone"],
                                 "avg_acc").set_index("strategy")
    assert set(table["reference"]) == {"best"} and math.isnan(table.loc["best", "p_vs_best"])
    p_close = stats.ttest_rel([79.0, 82.5, 81.5], [80.0, 81.0, 82.0]).pvalue
    p_far = stats.ttest_rel([50.0, 51.1, 52.2], [80.0, 81.0, 82.0]).pvalue
    assert table.loc["close", "p_vs_best"] == pytest.approx(p_close)
    assert table.loc["far", "p_vs_best"] == pytest.approx(p_far)
    assert table.loc["close", "p_vs_best_holm"] == pytest.approx(min(1.0, max(2 * p_far, p_close)))
    assert table.loc["far", "p_vs_best_holm"] == pytest.approx(2 * p_far)
    assert table.loc["far", "diff_vs_best"] == pytest.approx(-29.9)
    assert table.loc["close", "indistinguishable_from_best"] and not table.loc["far", "indistinguishable_from_best"]
    assert (table["n_pairs"] == 3).all()

    named = compare_to_reference(runs_frame(rows), ["strategy", "config_id"], ["stream", "backbone"], "avg_acc",
                                 reference="close").set_index("strategy")
    assert set(named["reference"]) == {"close"} and math.isnan(named.loc["close", "p_vs_best"])
    missing = compare_to_reference(runs_frame(rows), ["strategy", "config_id"], ["stream", "backbone"], "avg_acc",
                                   reference="absent")
    assert set(missing["reference"]) == {"best"}  # not run on this stream: the best mean


def test_bounded_interval_is_the_t_interval_of_the_logits_mapped_back():
    from reports.statistics import bounded_interval

    values = [80.0, 90.0, 95.0]
    z = [math.log(v / (100 - v)) for v in values]
    mean, s = sum(z) / 3, math.sqrt(sum((x - sum(z) / 3) ** 2 for x in z) / 2)
    half = 4.302652729911275 * s / math.sqrt(3)  # t_{0.975, 2}
    expected = tuple(100 / (1 + math.exp(-(mean + sign * half))) for sign in (-1, 1))
    assert bounded_interval(values, (0.0, 100.0)) == pytest.approx(expected, rel=1e-9)
    # signed metrics (bwt, drops) map [-100, 100] onto the unit interval first
    low, high = bounded_interval([-10.0, 5.0, 20.0], (-100.0, 100.0))
    assert -100 < low < -10 and 20 < high < 100


@pytest.mark.parametrize("values", [[64.0, 89.76], [99.0, 100.0, 100.0], [0.0, 3.0], [100.0, 0.0], [50.0, 51.0]])
def test_intervals_of_accuracies_never_leave_0_100(values):
    from reports.statistics import bounded_interval

    low, high = bounded_interval(values, (0.0, 100.0))
    assert 0.0 <= low <= high <= 100.0
    plain_low, plain_high = t_interval(values)
    assert plain_low < 0 or plain_high > 100 or low == pytest.approx(plain_low, abs=2)  # near the plain one mid-range


def test_leaderboard_intervals_use_the_range_of_each_metric():
    from reports.statistics import interval_columns, metric_range

    assert metric_range("avg_acc") == (0.0, 100.0) and metric_range("pretrain_drop_knn") == (-100.0, 100.0)
    assert metric_range("retained_last_head") == (0.0, 100.0) and metric_range("wall_time_s") is None
    runs = pd.DataFrame({"strategy": ["a", "a"], "avg_inc_acc": [64.0, 89.76], "wall_time_s": [1.0, 9.0]})
    row = interval_columns(runs, ["strategy"], ["avg_inc_acc", "wall_time_s"]).iloc[0]
    assert 0 <= row["avg_inc_acc_ci_low"] and row["avg_inc_acc_ci_high"] <= 100  # the plain one: [-86.8, 240.6]
    assert row["wall_time_s_ci_low"] == pytest.approx(t_interval([1.0, 9.0])[0])  # unbounded: plain t-interval
