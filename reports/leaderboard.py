"""Leaderboards: one row per (stream, strategy, backbone, configuration), mean and std over seeds.

Built only from `result.json` files, so they can be regenerated at any time without rerunning anything. Runs of the
same strategy with different hyper-parameters are different rows (`config_id`), never averaged together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from benchmark.metrics import pretrain_drop, retention_curves
from benchmark.results import STATUS_OK, RunSpec

KEYS = ["stream", "strategy", "backbone", "config_id"]
SEED_METRICS = ["avg_acc", "avg_inc_acc", "acc_pooled_last", "bwt", "forgetting"]
COUNTS = ["params_trainable", "params_added", "flops_per_image"]  # the same for every seed of a configuration
COSTS = COUNTS + ["wall_time_s"]
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
        **{name: metrics.get(name) for name in SEED_METRICS}, **retention,
        **{name: cost[name] for name in COSTS},
    }


def retention_columns(table: pd.DataFrame) -> list[str]:
    """The retention metrics (per protocol) present in a leaderboard, without their _mean / _std suffix."""
    return [c[: -len("_mean")] for c in table.columns
            if c.startswith(("retained_last_", "pretrain_drop_")) and c.endswith("_mean")]


def columns(metrics: list[str]) -> list[str]:
    return KEYS + [f"{m}_{s}" for m in metrics for s in ("mean", "std")] + COSTS + ["n_seeds"]


def build_leaderboard(results: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Mean and std (over seeds) of each metric; std is empty with one seed. Sorted by stream, then avg_acc.
    Retention columns come per protocol, in the order the results first name them."""
    rows = [run_row(r) for r in results if r.get("status") == STATUS_OK]
    if not rows:
        return pd.DataFrame(columns=columns(SEED_METRICS))
    frame = pd.DataFrame(rows)
    metrics = SEED_METRICS + [c for c in frame.columns if c.startswith(("retained_last_", "pretrain_drop_"))]
    frame[metrics] = frame[metrics].astype(float)
    grouped = frame.groupby(KEYS, sort=False)
    table = grouped[metrics].agg(["mean", "std"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    table = table.join(grouped[COSTS].mean()).join(grouped["seed"].nunique().rename("n_seeds")).reset_index()
    table[COUNTS] = table[COUNTS].round().astype("int64")
    table = table.sort_values(["stream", "avg_acc_mean", "strategy"], ascending=[True, False, True])
    return table[columns(metrics)].reset_index(drop=True)


def markdown(table: pd.DataFrame) -> str:
    """The headline columns as a Markdown table (mean ± std over seeds), for README files and papers."""
    def cell(row: pd.Series, metric: str) -> str:
        mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
        if pd.isna(mean):
            return "–"
        return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"

    shown = ["avg_acc", "avg_inc_acc", "bwt", "forgetting", *retention_columns(table)]
    rows = [{"stream": r["stream"], "strategy": r["strategy"], "backbone": r["backbone"],
             **{m: cell(r, m) for m in shown}, "trainable params": f"{r['params_trainable']:,}",
             "GFLOPs/image": f"{r['flops_per_image'] / 1e9:.3f}", "seeds": r["n_seeds"]}
            for _, r in table.iterrows()]
    if not rows:
        return "(no finished runs)\n"
    return pd.DataFrame(rows).to_markdown(index=False) + "\n"


def write_leaderboards(results: list[dict[str, Any]], out_dir: Path) -> pd.DataFrame:
    """`leaderboard.csv`, one `leaderboard_<stream>.csv` per stream and `leaderboard.md` under `out_dir`."""
    table = build_leaderboard(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / LEADERBOARD_FILE, index=False, float_format="%.4f")
    for stream, rows in table.groupby("stream", sort=True):
        rows.to_csv(out_dir / f"leaderboard_{stream}.csv", index=False, float_format="%.4f")
    (out_dir / MARKDOWN_FILE).write_text(markdown(table))
    return table
