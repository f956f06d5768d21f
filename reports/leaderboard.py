"""Leaderboards: one row per (stream, strategy, backbone, configuration): mean, std and 95% interval over seeds, and
the paired comparison with the stream's best (reports/statistics.py).

Built only from `result.json` files, so they can be regenerated at any time without rerunning anything. Runs of the
same strategy with different hyper-parameters are different rows (`config_id`), never averaged together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from benchmark.config import ComparisonConfig
from benchmark.metrics import pretrain_drop, retention_curves
from benchmark.published import PublishedNumber
from benchmark.results import STATUS_OK, RunSpec
from reports.published import published_columns, published_metrics, recipe_text
from reports.statistics import COMPARISON_COLUMNS, compare_to_reference, interval_columns

KEYS = ["stream", "strategy", "backbone", "config_id"]
MATRIX_METRICS = ["avg_acc", "avg_inc_acc", "acc_pooled_last", "bwt", "forgetting"]
DIAGNOSTIC_METRICS = ["til_avg_acc", "forward_transfer", "ece_last"]  # benchmark/diagnostics.py
SEED_METRICS = MATRIX_METRICS + DIAGNOSTIC_METRICS
COUNTS = ["params_trainable", "params_added", "flops_per_image"]  # the same for every seed of a configuration
COSTS = COUNTS + ["wall_time_s", "train_images_per_s", "eval_images_per_s", "peak_host_mb", "peak_device_mb"]
STATS = ("mean", "std", "ci_low", "ci_high")
COMPARED = "avg_acc"  # the metric rows are ranked and compared by
LEADERBOARD_FILE = "leaderboard.csv"
MARKDOWN_FILE = "leaderboard.md"


UPPER_BOUND_MARK = " (joint upper bound)"  # after the strategy's name: trained once on all tasks, not continual


def strategy_label(result: dict[str, Any]) -> str:
    """The strategy's name as tables and plots show it, marked when the run is a joint-training upper bound."""
    return result["strategy"] + (UPPER_BOUND_MARK if result.get("joint_upper_bound") else "")


def config_id(result: dict[str, Any]) -> str:
    """The hash of a run's configuration without its seed: runs that differ only by seed share it."""
    return RunSpec(**result["config"]).config_hash(with_seed=False)


def retention_metrics(protocol: str) -> list[str]:
    """The leaderboard's columns for one retention protocol: accuracy kept after the last task, and the drop."""
    return [f"retained_last_{protocol}", f"pretrain_drop_{protocol}"]


def run_row(result: dict[str, Any]) -> dict[str, Any]:
    """One finished run as a flat row of the leaderboard's inputs (retention: two columns per protocol)."""
    metrics, cost = result["metrics"], result["cost"]
    retention = {}
    for protocol, curve in retention_curves(result).items():
        last, drop = retention_metrics(protocol)
        retention[last] = curve[-1] if curve else None
        retention[drop] = pretrain_drop(curve)
    return {
        "stream": result["stream"], "strategy": strategy_label(result), "backbone": result["backbone"],
        "config_id": config_id(result), "seed": result["seed"],
        "class_order": ",".join(map(str, result.get("class_order", []))),
        **{name: metrics.get(name) for name in MATRIX_METRICS},
        "til_avg_acc": metrics.get("task_incremental", {}).get("avg_acc"),
        "forward_transfer": metrics.get("forward_transfer"), "ece_last": metrics.get("ece_last"), **retention,
        **{name: cost.get(name) for name in COSTS}, "recipe": recipe_text(result.get("recipe", {})),
    }


def retention_columns(table: pd.DataFrame) -> list[str]:
    """The retention metrics (per protocol) present in a leaderboard, without their _mean / _std suffix."""
    return [c[: -len("_mean")] for c in table.columns
            if c.startswith(("retained_last_", "pretrain_drop_")) and c.endswith("_mean")]


def columns(metrics: list[str]) -> list[str]:
    return KEYS + [f"{m}_{s}" for m in metrics for s in STATS] + COSTS + ["n_seeds", "recipe"] + COMPARISON_COLUMNS


def build_leaderboard(results: Iterable[dict[str, Any]], comparison: ComparisonConfig = ComparisonConfig(),
                      published: Iterable[PublishedNumber] = ()) -> pd.DataFrame:
    """Mean, std and 95% t-interval (over seeds) of each metric; std and interval are empty with one seed. Then each
    continual row's paired comparison with its stream's reference on avg_acc (joint upper bounds are neither the
    reference nor compared: they are not continual learners). Sorted by stream, then avg_acc.
    Retention columns come per protocol, in the order the results first name them. Each row's recipe (the
    `recipe` column, one line: benchmark/recipe.py) and, for rows with a `published` number, the published values,
    differences, source and recipe check (reports/published.py)."""
    results = [r for r in results if r.get("status") == STATUS_OK]
    rows = [run_row(r) for r in results]
    if not rows:
        return pd.DataFrame(columns=columns(SEED_METRICS))
    frame = pd.DataFrame(rows)
    metrics = SEED_METRICS + [c for c in frame.columns if c.startswith(("retained_last_", "pretrain_drop_"))]
    frame[metrics + COSTS] = frame[metrics + COSTS].astype(float)  # costs a result lacks (older ones) are NaN
    grouped = frame.groupby(KEYS, sort=False)
    table = grouped[metrics].agg(["mean", "std"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    table = table.join(grouped[COSTS].mean()).join(grouped["seed"].nunique().rename("n_seeds"))
    table = table.join(grouped["recipe"].first()).reset_index()
    table = table.merge(interval_columns(frame, KEYS, metrics), on=KEYS, how="left")
    continual = frame[~frame["strategy"].str.endswith(UPPER_BOUND_MARK)]  # upper bounds are not in the contest
    compared = compare_to_reference(continual, ["strategy", "config_id"], ["stream", "backbone"], COMPARED,
                                    comparison.reference, comparison.level)
    table = table.merge(compared, on=["strategy", "config_id"] + ["stream", "backbone"], how="left")
    table[COUNTS] = table[COUNTS].round().astype("int64")
    table = table.sort_values(["stream", "avg_acc_mean", "strategy"], ascending=[True, False, True])
    table = table[columns(metrics)].reset_index(drop=True)
    recipes = {(r["stream"], strategy_label(r), r["backbone"], config_id(r)): r.get("recipe", {}) for r in results}
    return published_columns(table, recipes, published, {strategy_label(r): r["strategy"] for r in results})


def verdict(row: pd.Series) -> str:
    """The comparison with the stream's reference in words: `best`, `≈ best` (not distinguishable at the chosen
    level), `< best` or `> best` (distinguishable, with its Holm-adjusted p), `–` (fewer than two paired seeds),
    `upper bound` (a joint-training upper bound: not compared)."""
    if row["strategy"].endswith(UPPER_BOUND_MARK):
        return "upper bound"
    if pd.isna(row["indistinguishable_from_best"]):
        return "–"
    if pd.isna(row["p_vs_best"]):
        return "best"  # the reference itself
    if row["indistinguishable_from_best"]:
        return f"≈ best (p={row['p_vs_best_holm']:.2f})"
    return f"{'<' if row['diff_vs_best'] < 0 else '>'} best (p={row['p_vs_best_holm']:.3f})"


def markdown(table: pd.DataFrame) -> str:
    """The headline columns as a Markdown table (mean [95% t-interval] over seeds; the mean alone with one seed),
    with the paired comparison, for README files and papers."""
    def cell(row: pd.Series, metric: str) -> str:
        mean, low, high = row[f"{metric}_mean"], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]
        if pd.isna(mean):
            return "–"
        return f"{mean:.2f}" if pd.isna(low) else f"{mean:.2f} [{low:.2f}, {high:.2f}]"

    def published(row: pd.Series) -> str:
        stated = [m for m in published_metrics(table) if not pd.isna(row[f"published_{m}"])]
        return "; ".join(f"{m} {row[f'published_{m}']:.2f} (Δ {row[f'diff_{m}']:+.2f})" for m in stated) or "–"

    shown = ["avg_acc", "avg_inc_acc", "bwt", "forgetting", *retention_columns(table)]
    rows = [{"stream": r["stream"], "strategy": r["strategy"], "backbone": r["backbone"],
             **{m: cell(r, m) for m in shown}, "trainable params": f"{r['params_trainable']:,}",
             "GFLOPs/image": f"{r['flops_per_image'] / 1e9:.3f}", "seeds": r["n_seeds"], "vs best": verdict(r),
             **({"published (Δ = ours - published)": published(r)} if published_metrics(table) else {})}
            for _, r in table.iterrows()]
    if not rows:
        return "(no finished runs)\n"
    return pd.DataFrame(rows).to_markdown(index=False) + "\n"


def write_leaderboards(results: list[dict[str, Any]], out_dir: Path,
                       comparison: ComparisonConfig = ComparisonConfig(),
                       published: Iterable[PublishedNumber] = ()) -> pd.DataFrame:
    """`leaderboard.csv`, one `leaderboard_<stream>.csv` per stream and `leaderboard.md` under `out_dir`."""
    table = build_leaderboard(results, comparison, published)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / LEADERBOARD_FILE, index=False, float_format="%.4f")
    for stream, rows in table.groupby("stream", sort=True):
        rows.to_csv(out_dir / f"leaderboard_{stream}.csv", index=False, float_format="%.4f")
    (out_dir / MARKDOWN_FILE).write_text(markdown(table))
    return table
