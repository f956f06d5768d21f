"""Everything a report holds, regenerated from stored results alone: leaderboards, plots, report.html.

The report's folder may be someone else's results folder: its `plots/` and `pages/` must be real folders (checked,
or created, before any file is written) and every file is written whole, never through a link (`benchmark.safe_io`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.config import ComparisonConfig
from benchmark.published import PublishedNumber, read_published
from benchmark.errors import UserInputError
from benchmark.results import STATUS_OK, Skipped, scan_results
from benchmark.safe_io import real_folder, require_file_slot
from reports.html import HTML_FILE, render_html
from reports.leaderboard import LEADERBOARD_FILE, MARKDOWN_FILE, write_leaderboards
from reports.plots import render_plots
from reports.run_pages import PAGES


@dataclass(frozen=True)
class Report:
    table: pd.DataFrame
    leaderboard: Path
    markdown: Path
    html: Path
    skipped: list[Skipped] = field(default_factory=list)  # result files left out (unusable), with why
    notes: list[str] = field(default_factory=list)  # other files left out (an unreadable published.json), one line each

    @property
    def files(self) -> list[Path]:
        """What the report consists of (report.html, the leaderboards, plots/, pages/): the suite's tracked
        artifacts."""
        folder = self.html.parent
        return [self.html, self.markdown, *sorted(folder.glob("leaderboard*.csv")), folder / "plots", folder / PAGES]


def collect(result_dirs: list[Path]) -> tuple[list[dict[str, Any]], list[Skipped]]:
    """Results of several folders merged by run id (where a run appears twice, a finished result wins), and the
    result files left out because they do not check out (`benchmark.results.read_result`)."""
    merged: dict[str, dict[str, Any]] = {}
    skipped: list[Skipped] = []
    for folder in result_dirs:
        results, unusable = scan_results(folder)
        skipped += unusable
        for result in results:
            kept = merged.get(result["run_id"])
            if kept is None or (kept.get("status") != STATUS_OK and result.get("status") == STATUS_OK):
                merged[result["run_id"]] = result
    return [merged[run_id] for run_id in sorted(merged)], skipped


def collect_published(result_dirs: list[Path]) -> tuple[list[PublishedNumber], list[str]]:
    """The published numbers the folders hold (`published.json`, written by a suite whose config states them); for a
    (strategy, stream, backbone) named in several folders the first folder's entry is kept."""
    entries: dict[tuple[str, str, str], PublishedNumber] = {}
    notes = []
    for folder in result_dirs:
        found, problem = read_published(folder)
        notes += [problem] if problem else []
        for entry in found:
            entries.setdefault(entry.row_key, entry)
    return list(entries.values()), notes


def generate_report(result_dirs: list[Path], out_dir: Path,
                    comparison: ComparisonConfig = ComparisonConfig()) -> Report:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserInputError(f"cannot create the report folder {out_dir} ({error.strerror}); pass another --out") \
            from None
    for folder in (PAGES, "plots"):  # a link or a file there, or a folder where a file goes, fails now, before
        real_folder(out_dir, folder)  # anything is written
    for name in (LEADERBOARD_FILE, MARKDOWN_FILE, HTML_FILE):
        require_file_slot(out_dir / name)
    results, skipped = collect(result_dirs)
    published, notes = collect_published(result_dirs)
    table = write_leaderboards(results, out_dir, comparison, published)
    plots = render_plots(results, out_dir, table)
    page = render_html(results, table, plots, out_dir, result_dirs)
    return Report(table, out_dir / LEADERBOARD_FILE, out_dir / MARKDOWN_FILE, page, skipped, notes)
