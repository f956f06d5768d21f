"""The leaderboard: one row per (stream, strategy, backbone, configuration), mean and std over seeds.

Built only from `result.json` files, so it can be regenerated at any time without rerunning anything. Runs of the
same strategy with different hyper-parameters are different rows (`config_id`), never averaged together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from benchmark.results import STATUS_OK, RunSpec, iter_results

KEYS = ["stream", "strategy", "backbone", "config_id"]
SEED_METRICS = ["avg_acc", "avg_inc_acc", "acc_pooled_last", "bwt", "forgetting", "retained_pretrain_last",
                "pretrain_drop"]
COUNTS = ["params_trainable", "params_added", "flops_per_image"]  # the same for every seed of a configuration
COSTS = COUNTS + ["wall_time_s"]
LEADERBOARD_FILE = "leaderboard.csv"


def _row(result: dict[str, Any]) -> dict[str, Any]:
    metrics, cost = result["metrics"], result["cost"]
    retained = metrics["retained_pretrain_acc"]
    spec = RunSpec(**result["config"])
    return {
        "stream": result["stream"], "strategy": result["strategy"], "backbone": result["backbone"],
        "config_id": spec.config_hash(with_seed=False), "seed": result["seed"],
        **{name: metrics[name] for name in SEED_METRICS if name in metrics},
        "retained_pretrain_last": retained[-1] if retained else None,
        **{name: cost[name] for name in COSTS},
    }


def build_leaderboard(results: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Mean and std (over seeds) of each metric; std is empty with one seed. Sorted by stream, then avg_acc."""
    rows = [_row(r) for r in results if r.get("status") == STATUS_OK]
    columns = KEYS + [f"{m}_{s}" for m in SEED_METRICS for s in ("mean", "std")] + COSTS + ["n_seeds"]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows)
    frame[SEED_METRICS] = frame[SEED_METRICS].astype(float)
    grouped = frame.groupby(KEYS, sort=False)
    table = grouped[SEED_METRICS].agg(["mean", "std"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    table = table.join(grouped[COSTS].mean()).join(grouped["seed"].nunique().rename("n_seeds")).reset_index()
    table[COUNTS] = table[COUNTS].round().astype("int64")
    table = table.sort_values(["stream", "avg_acc_mean", "strategy"], ascending=[True, False, True])
    return table[columns].reset_index(drop=True)


def write_leaderboard(out_dir: Path) -> pd.DataFrame:
    """Rebuild `<out_dir>/leaderboard.csv` from the stored results and return it."""
    table = build_leaderboard(iter_results(out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / LEADERBOARD_FILE, index=False, float_format="%.4f")
    return table
