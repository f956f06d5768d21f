"""Uncertainty over seeds and paired comparisons between strategies, for the leaderboard.

Choices (docs/statistics.md):
- Interval: the two-sided 95% Student t-interval of the mean over seeds, mean ± t_{0.975, n-1} · s / sqrt(n)
  (`scipy.stats.t.interval`). A suite runs a handful of seeds (3 to 5); a bootstrap percentile interval over 3 values
  has only 10 distinct resamples and covers far less than 95%, while the t-interval is exact for normally
  distributed seed-to-seed variation and wide when n is small (n = 2: ± 12.7 s / sqrt 2), as it should be. With one
  seed there is no interval (NaN), never a zero-width one.
- Bounded metrics (accuracies in [0, 100]; bwt, forgetting and drops in [-100, 100]: `RANGES`) get the t-interval on
  the logit scale (`bounded_interval`): each value mapped to p = (x - low) / (high - low), z = log(p / (1 - p)), the
  t-interval of z's mean, mapped back. It lies inside the range by construction (a plain t-interval of 3 seeds at 90%
  reached 109% with two seeds), is close to the plain one away from the bounds, and longer towards the middle where
  the values sit near a bound. Values at a bound are moved 1e-4 of the range inside it first.
- Pairing: runs of two strategies with the same seed saw the same class order (the seed draws it), so their
  difference removes the class order's share of the variation. The pairing is checked, not assumed: a seed is a pair
  only if both runs stored the same class order (a suite with `class_order_seed` fixed pairs by seed too, since its
  class order is the same for every seed).
- Test: the two-sided paired t-test (`scipy.stats.ttest_rel`) on the per-seed differences. The Wilcoxon signed-rank
  test needs no normality but cannot reject at 0.05 with fewer than 6 pairs (its smallest two-sided p with 3 pairs
  is 2/2^3 = 0.25), which makes it useless at the seed counts a suite affords.
- Correction: Holm's step-down method over the comparisons of one stream (each strategy against the reference),
  which controls the family-wise error rate at `level` with no assumption on how the tests depend on each other
  (they share the reference's runs) and rejects at least as much as Bonferroni. Written here (`holm`) because scipy
  has only Benjamini-Hochberg (`false_discovery_control`, a false-discovery-rate method) and statsmodels'
  `multipletests` would be a new dependency for ten lines.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95


def finite(values: Sequence[float]) -> np.ndarray:
    """The values that are numbers (a metric undefined for a run, e.g. bwt of a one-task stream, is NaN)."""
    array = np.asarray(values, dtype=float)
    return array[np.isfinite(array)]


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Student t-interval of the mean of `values`: mean ± t_{(1+c)/2, n-1} · s / sqrt(n), s the sample std
    (ddof 1); (NaN, NaN) with fewer than two values; (mean, mean) when all values are equal."""
    data = finite(values)
    if len(data) < 2:
        return math.nan, math.nan
    mean, sem = float(data.mean()), float(stats.sem(data))
    if sem == 0:
        return mean, mean
    low, high = stats.t.interval(confidence, len(data) - 1, loc=mean, scale=sem)
    return float(low), float(high)


# The range of each bounded metric (a retention metric by its prefix), for `bounded_interval`.
ACCURACY, SIGNED = (0.0, 100.0), (-100.0, 100.0)
RANGES = {"avg_acc": ACCURACY, "avg_inc_acc": ACCURACY, "acc_pooled_last": ACCURACY, "til_avg_acc": ACCURACY,
          "forward_transfer": ACCURACY, "ece_last": ACCURACY, "retained_last_": ACCURACY, "bwt": SIGNED,
          "forgetting": SIGNED, "pretrain_drop_": SIGNED}
EDGE = 1e-4  # share of the range by which a value at a bound is moved inside it before the logit


def metric_range(metric: str) -> Optional[tuple[float, float]]:
    """(low, high) of a bounded metric, None for an unbounded one (costs)."""
    for name, bounds in RANGES.items():
        if metric == name or (name.endswith("_") and metric.startswith(name)):
            return bounds
    return None


def bounded_interval(values: Sequence[float], bounds: tuple[float, float],
                     confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The t-interval of the mean on the logit scale of `values` in `bounds`, mapped back: inside the bounds by
    construction. (NaN, NaN) with fewer than two values; (x, x) when all values are x."""
    data = finite(values)
    if len(data) >= 2 and np.all(data == data[0]):
        return float(data[0]), float(data[0])
    low, high = bounds
    p = np.clip((data - low) / (high - low), EDGE, 1 - EDGE)
    z_low, z_high = t_interval(np.log(p / (1 - p)), confidence)
    if math.isnan(z_low):
        return math.nan, math.nan
    back = lambda z: low + (high - low) / (1 + math.exp(-z))  # noqa: E731
    return back(z_low), back(z_high)


def paired_t_test(first: Sequence[float], second: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test of mean(first - second) = 0: t = mean(d) / (s_d / sqrt(n)), n - 1
    degrees of freedom. NaN with fewer than two pairs; 1 when every difference is 0 (nothing tells them apart);
    0 when the differences are equal and non-zero."""
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if len(a) != len(b):
        raise ValueError(f"a paired test needs as many values on each side, got {len(a)} and {len(b)}")
    if len(a) < 2:
        return math.nan
    if np.all(a == b):
        return 1.0
    with warnings.catch_warnings():  # equal non-zero differences: scipy warns about the zero variance, p = 0
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_rel(a, b).pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: with the m finite p-values sorted p_(1) <= ... <= p_(m),
    p~_(k) = max_{l <= k} min(1, (m - l + 1) · p_(l)); a hypothesis is rejected at level alpha when p~ < alpha.
    NaN entries (comparisons that could not be made) stay NaN and do not count in m."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(len(p), math.nan)
    present = np.flatnonzero(np.isfinite(p))
    order = present[np.argsort(p[present], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def paired_by_seed(reference: pd.DataFrame, other: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The metric of both sides at each seed they share with the same stored class order (columns `seed`,
    `class_order`, `metric`), sorted by seed; seeds whose class orders differ are not pairs."""
    joined = reference.merge(other, on="seed", suffixes=("_ref", "_other"))
    same_order = joined["class_order_ref"] == joined["class_order_other"]
    joined = joined[same_order].dropna(subset=[f"{metric}_ref", f"{metric}_other"]).sort_values("seed")
    return joined[f"{metric}_ref"].to_numpy(float), joined[f"{metric}_other"].to_numpy(float)


def interval_columns(runs: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """`<metric>_ci_low` and `<metric>_ci_high` (95% interval over seeds: on the logit scale for a bounded metric,
    the plain t-interval otherwise) per group of `keys`."""
    rows = []
    for key, group in runs.groupby(keys, sort=False):
        row = dict(zip(keys, key))
        for metric in metrics:
            bounds = metric_range(metric)
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = (
                t_interval(group[metric]) if bounds is None else bounded_interval(group[metric], bounds))
        rows.append(row)
    return pd.DataFrame(rows, columns=keys + [f"{m}_ci_{s}" for m in metrics for s in ("low", "high")])


COMPARISON_COLUMNS = ["reference", "n_pairs", "diff_vs_best", "p_vs_best", "p_vs_best_holm",
                      "indistinguishable_from_best"]


def _reference_key(means: dict[tuple, float], strategy_of: dict[tuple, str], reference: Optional[str]) -> tuple:
    """The row the others are compared with: the named strategy's best configuration, else the best mean (ties: the
    first key in sorted order, so the choice does not depend on the order results were read in)."""
    named = [key for key in means if strategy_of[key] == reference]
    return min(named or means, key=lambda key: (-means[key], key))


def compare_to_reference(runs: pd.DataFrame, row_keys: list[str], group_keys: list[str], metric: str,
                         reference: Optional[str] = None, level: float = 0.05) -> pd.DataFrame:
    """Per group (a stream on a backbone), every row (strategy configuration) against the reference row, paired by
    seed: `reference` (its strategy), `n_pairs`, `diff_vs_best` (mean of row - reference over the pairs), the paired
    t-test's `p_vs_best`, Holm-adjusted over the group's comparisons (`p_vs_best_holm`), and
    `indistinguishable_from_best` (adjusted p >= level; the reference itself: True; fewer than two pairs: None).
    `runs` holds one row per run with `row_keys`, `seed`, `class_order` and `metric`."""
    out = []
    for group_key, group in runs.groupby(group_keys, sort=False):
        per_row = dict(tuple(group.groupby(row_keys, sort=True)))
        means = {key: rows[metric].mean() for key, rows in per_row.items() if rows[metric].notna().any()}
        if not means:
            continue
        best = _reference_key(means, {key: key[row_keys.index("strategy")] for key in means}, reference)
        found = []
        for key, rows in per_row.items():
            ref_values, values = paired_by_seed(per_row[best], rows, metric)
            p = math.nan if key == best else paired_t_test(values, ref_values)
            found.append({**dict(zip(group_keys, group_key)), **dict(zip(row_keys, key)), "reference": best[row_keys.index("strategy")],
                          "n_pairs": len(values), "diff_vs_best": float(np.mean(values - ref_values))
                          if len(values) else math.nan, "p_vs_best": p, "is_reference": key == best})
        for row, adjusted in zip(found, holm([row["p_vs_best"] for row in found])):
            row["p_vs_best_holm"] = adjusted
            row["indistinguishable_from_best"] = (True if row.pop("is_reference") else
                                                  None if math.isnan(adjusted) else bool(adjusted >= level))
        out.extend(found)
    return pd.DataFrame(out, columns=group_keys + row_keys + COMPARISON_COLUMNS)
