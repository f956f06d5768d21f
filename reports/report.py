"""Everything a report holds, regenerated from stored results alone: leaderboards, plots, report.html."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.config import ComparisonConfig
from benchmark.results import STATUS_OK, iter_results
from reports.html import render_html
from reports.leaderboard import LEADERBOARD_FILE, MARKDOWN_FILE, write_leaderboards
from reports.plots import render_plots


@dataclass(frozen=True)
class Report:
    table: pd.DataFrame
    leaderboard: Path
    markdown: Path
    html: Path


def collect(result_dirs: list[Path]) -> list[dict[str, Any]]:
    """Results of several folders merged by run id; where a run appears twice, a finished result wins."""
    merged: dict[str, dict[str, Any]] = {}
    for folder in result_dirs:
        for result in iter_results(folder):
            kept = merged.get(result["run_id"])
            if kept is None or (kept.get("status") != STATUS_OK and result.get("status") == STATUS_OK):
                merged[result["run_id"]] = result
    return [merged[run_id] for run_id in sorted(merged)]


def generate_report(result_dirs: list[Path], out_dir: Path,
                    comparison: ComparisonConfig = ComparisonConfig()) -> Report:
    results = collect(result_dirs)
    table = write_leaderboards(results, out_dir, comparison)
    plots = render_plots(results, out_dir, table)
    page = render_html(results, table, plots, out_dir, result_dirs)
    return Report(table, out_dir / LEADERBOARD_FILE, out_dir / MARKDOWN_FILE, page)
