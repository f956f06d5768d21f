"""The measured results tables of README.md and docs/results-mini.md, regenerated from a results folder's stored
`result.json` files (means over seeds where there are several), so no table in the docs is typed by hand:

    python benchmarks/results_table.py RESULTS_DIR [MORE_DIRS ...]                 # the long table, on stdout
    python benchmarks/results_table.py RESULTS_DIR --layout wide                   # one row per strategy
    python benchmarks/results_table.py RESULTS_DIR --write README.md --write docs/results-mini.md

`--write FILE` replaces, in place, every block of FILE between a line `<!-- results-table: LAYOUT -->` and the next
`<!-- /results-table -->` with the table of that layout (the marker lines stay); a file without a marker is refused.

Layouts:
- `long`: stream, strategy (joint upper bounds marked), avg_acc, avg_inc_acc, bwt, the pre-training drop per
  retention protocol, task-id accuracy (strategies that select a task-specific part), trainable and added
  parameters, GFLOPs per image, wall time in seconds; rows sorted by stream, then avg_acc.
- `wide`: one row per strategy, avg_acc and the pre-training drop (the original head's where measured, else the
  first protocol's) on each stream side by side, and the trainable parameters (on the first stream); continual strategies by their avg_acc on the first stream, joint upper bounds last.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from reports.leaderboard import UPPER_BOUND_MARK, run_row, strategy_label
from reports.report import collect

TEXT_COLUMNS = ("stream", "strategy")
MARKER = re.compile(r"(<!-- results-table: (\w+) -->\n)(.*?)(<!-- /results-table -->)", re.DOTALL)


def row(result: dict[str, Any]) -> dict[str, Any]:
    base = run_row(result)
    drops = {f"pretrain_drop {k[len('pretrain_drop_'):]}": v for k, v in base.items() if k.startswith("pretrain_drop_")}
    return {"stream": result["stream"], "strategy": strategy_label(result), "avg_acc": base["avg_acc"],
            "avg_inc_acc": base["avg_inc_acc"], "bwt": base["bwt"], **drops,
            "task-id acc": result["metrics"].get("task_selection_acc_last"),
            "trainable params": result["cost"]["params_trainable"], "added params": result["cost"]["params_added"],
            "GFLOPs/img": result["cost"]["flops_per_image"] / 1e9, "time (s)": result["cost"]["wall_time_s"]}


def means(folders: list[Path]) -> pd.DataFrame:
    """One row per (stream, strategy): the means over seeds of every finished run in `folders`, streams in the
    order they first appear."""
    results, _ = collect(folders)
    frame = pd.DataFrame([row(r) for r in results if r.get("status") == "ok"])
    if frame.empty:
        return frame
    return frame.groupby(["stream", "strategy"], sort=False).mean(numeric_only=True).reset_index()


def formatted(frame: pd.DataFrame, formats: dict[str, str]) -> str:
    frame = frame.copy()
    for column in frame.columns:
        fmt = formats.get(column, "{:.1f}" if "drop" in column else None)
        if fmt:
            frame[column] = [fmt.format(v) if pd.notna(v) else "" for v in frame[column]]
    align = ["left" if column in TEXT_COLUMNS else "right" for column in frame.columns]
    return frame.to_markdown(index=False, disable_numparse=True, tablefmt="pipe", colalign=align) + "\n"


def long_table(frame: pd.DataFrame) -> str:
    frame = frame.sort_values(["stream", "avg_acc"], ascending=[False, False])
    return formatted(frame, {"avg_acc": "{:.2f}", "avg_inc_acc": "{:.2f}", "bwt": "{:.2f}", "task-id acc": "{:.1f}",
                             "trainable params": "{:,.0f}", "added params": "{:,.0f}", "GFLOPs/img": "{:.3f}",
                             "time (s)": "{:.0f}"})


def wide_table(frame: pd.DataFrame) -> str:
    streams = sorted(set(frame["stream"]), reverse=True)  # as the long table: mini-split before mini-domain
    drops = [c for c in frame.columns if c.startswith("pretrain_drop")]
    drop = "pretrain_drop head" if "pretrain_drop head" in drops else next(iter(drops), None)
    wide = frame.pivot(index="strategy", columns="stream", values=["avg_acc"] + ([drop] if drop else []))
    columns: dict[str, pd.Series] = {}
    for stream in streams:
        short = stream.removeprefix("mini-")
        columns[f"{short} avg_acc"] = wide["avg_acc"][stream]
        if drop:
            columns[f"{short} drop"] = wide[drop][stream]
    table = pd.DataFrame(columns)
    table["trainable params"] = frame[frame["stream"] == streams[0]].set_index("strategy")["trainable params"]
    table["upper bound"] = [name.endswith(UPPER_BOUND_MARK) for name in table.index]
    table = table.sort_values(["upper bound", f"{streams[0].removeprefix('mini-')} avg_acc"], ascending=[True, False])
    table = table.drop(columns="upper bound").rename_axis("strategy").reset_index()
    table["strategy"] = [name.replace(UPPER_BOUND_MARK, " (upper bound)") for name in table["strategy"]]
    return formatted(table, {**{c: "{:.2f}" for c in table.columns if c.endswith("avg_acc")},
                             "trainable params": "{:,.0f}"})


LAYOUTS: dict[str, Callable[[pd.DataFrame], str]] = {"long": long_table, "wide": wide_table}


def table(folders: list[Path], layout: str = "long") -> str:
    """The Markdown table of every finished run in `folders` in `layout`, means over seeds."""
    frame = means(folders)
    return "(no finished runs)\n" if frame.empty else LAYOUTS[layout](frame)


def regenerated(path: Path, folders: list[Path]) -> tuple[str, int]:
    """`path`'s text with every marked table regenerated, and how many there are."""
    text = path.read_text()
    blocks = MARKER.findall(text)
    unknown = sorted({layout for _, layout, _, _ in blocks} - set(LAYOUTS))
    if not blocks or unknown:
        raise ValueError(f"{path}: no `<!-- results-table: LAYOUT -->` ... `<!-- /results-table -->` block"
                         if not blocks else f"{path}: unknown table layout {unknown[0]!r}; use one of {list(LAYOUTS)}")
    return MARKER.sub(lambda m: m.group(1) + "\n" + table(folders, m.group(2)) + "\n" + m.group(4), text), len(blocks)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="results_table.py", description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="results folders (their runs/*/result.json)")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="long")
    parser.add_argument("--write", type=Path, action="append", default=[], metavar="FILE",
                        help="replace FILE's marked tables in place (repeatable)")
    args = parser.parse_args(argv)
    if not args.write:
        print(table(args.folders, args.layout), end="")
        return 0
    try:  # every file checked before any is written
        texts = {path: regenerated(path, args.folders) for path in args.write}
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path, (text, count) in texts.items():
        path.write_text(text)
        print(f"{path}: {count} table(s) regenerated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
