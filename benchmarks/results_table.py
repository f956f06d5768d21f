"""The results table of docs/results-mini.md, regenerated from a results folder's stored `result.json` files (means
over seeds where there are several), so the table in the docs is never typed by hand:

    python benchmarks/results_table.py RESULTS_DIR [MORE_DIRS ...] > table.md

Columns: stream, strategy (joint upper bounds marked), avg_acc, avg_inc_acc, bwt, the pre-training drop per retention
protocol, task-id accuracy (strategies that select a task-specific part), trainable and added parameters, GFLOPs per
image, wall time in seconds; rows sorted by stream, then avg_acc.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd

from reports.leaderboard import run_row, strategy_label
from reports.report import collect


def row(result: dict[str, Any]) -> dict[str, Any]:
    base = run_row(result)
    drops = {f"pretrain_drop {k[len('pretrain_drop_'):]}": v for k, v in base.items() if k.startswith("pretrain_drop_")}
    return {"stream": result["stream"], "strategy": strategy_label(result), "avg_acc": base["avg_acc"],
            "avg_inc_acc": base["avg_inc_acc"], "bwt": base["bwt"], **drops,
            "task-id acc": result["metrics"].get("task_selection_acc_last"),
            "trainable params": result["cost"]["params_trainable"], "added params": result["cost"]["params_added"],
            "GFLOPs/img": result["cost"]["flops_per_image"] / 1e9, "time (s)": result["cost"]["wall_time_s"]}


def table(folders: list[Path]) -> str:
    """The Markdown table of every finished run in `folders`, means over seeds."""
    results, _ = collect(folders)
    frame = pd.DataFrame([row(r) for r in results if r.get("status") == "ok"])
    if frame.empty:
        return "(no finished runs)\n"
    frame = frame.groupby(["stream", "strategy"], sort=False).mean(numeric_only=True).reset_index()
    frame = frame.sort_values(["stream", "avg_acc"], ascending=[False, False])
    formats = {"avg_acc": "{:.2f}", "avg_inc_acc": "{:.2f}", "bwt": "{:.2f}", "task-id acc": "{:.1f}",
               "trainable params": "{:,.0f}", "added params": "{:,.0f}", "GFLOPs/img": "{:.3f}", "time (s)": "{:.0f}"}
    for column in frame.columns:
        fmt = formats.get(column, "{:.1f}" if column.startswith("pretrain_drop") else None)
        if fmt:
            frame[column] = [fmt.format(v) if pd.notna(v) else "" for v in frame[column]]
    return frame.to_markdown(index=False, disable_numparse=True) + "\n"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    print(table([Path(a) for a in argv]), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
