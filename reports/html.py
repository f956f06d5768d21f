"""`report.html`: one leaderboard per stream (sortable by any column, the best value of each column marked,
intervals where there are seeds), the stream's plots under it, failed runs, and every run linked to its own page
(`reports/run_pages.py`).

Static: inline CSS and one small inline script (sorting; the page reads fine without it), images are PNG files
beside the page (with SVG links), so the folder opens from the file system with no network. Tables are sized to fit
a 1280 px window: headline columns only (every column is in leaderboard.csv), counts in k / M.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from benchmark.results import STATUS_OK
from reports.leaderboard import retention_columns
from reports.published import published_metrics
from reports.page import e, page, scrolling, table
from reports.plots import Group
from reports.run_pages import write_run_pages

CAPTIONS = {
    "accuracy_matrix": "Accuracy matrix R[i][j]: accuracy on task j after training through task i (mean over seeds).",
    "seen_accuracy": "Mean accuracy over the tasks seen so far, after each task (band: ±1 std over seeds).",
    "retention": "Retained accuracy on the pre-training domain after each task (0 = the pre-trained model), per "
                 "retention protocol.",
    "stability_plasticity": "Final avg_acc against retained pre-training accuracy; dashed: the Pareto front.",
    "accuracy_vs_params": "Final avg_acc against trainable parameters (log scale).",
    "gate_masks": "Per-task gate masks of selective LoRA (black = active block).",
    "intervals": "Final avg_acc: bar = mean over seeds, whiskers = 95% t-interval, dots = seeds; hatched = "
                 "distinguishable from the stream's best by a Holm-corrected paired t-test over shared seeds.",
    "old_new": "After each task: accuracy on the earlier tasks (old classes) and on the new task (mean over seeds).",
    "calibration": "Expected calibration error (15 bins) on the seen tasks after each task (lower: confidence "
                   "closer to accuracy).",
    "confusion": "Confusion matrix after the last task, by original class id, seeds summed, each row in %.",
}


@dataclass(frozen=True)
class Column:
    """A leaderboard column: the table's field, its header and tooltip, which way is better, how it prints."""

    field: str
    header: str
    tip: str
    better: Optional[str] = None  # "high", "low" or None (not ranked)
    kind: str = "points"  # points (mean with its interval), count, gflops, seconds, int, p (a p-value), flag

    def best(self, values: pd.Series) -> Optional[float]:
        """The best value of the column; None when it is not ranked or every row ties (nothing stands out)."""
        present = values.dropna()
        if self.better is None or present.nunique() < 2:
            return None
        return float(present.max() if self.better == "high" else present.min())


def columns(table_: pd.DataFrame) -> list[Column]:
    drops = [Column(f"{m}_mean", m.replace("pretrain_drop_", "drop "),
                    f"{m}: retained pre-training accuracy before training minus after the last task (points)", "low")
             for m in retention_columns(table_) if m.startswith("pretrain_drop_")]
    return [
        Column("avg_acc_mean", "avg_acc", "final accuracy averaged over tasks (%)", "high"),
        Column("avg_inc_acc_mean", "avg_inc_acc", "average incremental accuracy (%)", "high"),
        Column("bwt_mean", "bwt", "backward transfer (points; negative = forgetting)", "high"),
        Column("forgetting_mean", "forgetting", "average forgetting (points)", "low"),
        *drops,
        Column("params_trainable", "trainable", "trainable parameters", "low", "count"),
        Column("flops_per_image", "GFLOPs/img", "inference GFLOPs per image", "low", "gflops"),
        Column("wall_time_s", "time s", "wall time per run (seconds, mean over seeds)", "low", "seconds"),
        Column("n_seeds", "seeds", "seeds averaged", None, "int"),
        Column("p_vs_best_holm", "p vs best", "Holm-corrected paired t-test against the stream's best continual mean avg_acc "
               "over shared seeds (docs/statistics.md)", None, "p"),
        Column("indistinguishable_from_best", "≈ best", "not distinguishable from the best at the chosen level", None,
               "flag"),
    ]


def _count(value: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.0f}"


def _interval(row: pd.Series, metric: str) -> str:
    """`[low, high]` when the leaderboard has interval columns for the metric, else `± std` over several seeds."""
    low, high = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
    if low is not None and high is not None and not (pd.isna(low) or pd.isna(high)):
        return f"<small>[{low:.2f}, {high:.2f}]</small>"
    std = row.get(f"{metric}_std")
    return "" if std is None or pd.isna(std) else f"<small>± {std:.2f}</small>"


def cell(row: pd.Series, column: Column, best: Optional[float]) -> str:
    value = row.get(column.field)
    if value is None or pd.isna(value):
        return '<td data-v="">–</td>'
    value = float(value)
    text = {"points": lambda: f"{value:.2f}" + _interval(row, column.field[: -len("_mean")]),
            "count": lambda: f'<span title="{value:,.0f}">{_count(value)}</span>',
            "gflops": lambda: f"{value / 1e9:.3f}", "seconds": lambda: f"{value:.0f}",
            "int": lambda: f"{value:.0f}", "p": lambda: f"{value:.3f}",
            "flag": lambda: "yes" if value else "no"}[column.kind]()
    marked = best is not None and math.isclose(value, best, rel_tol=1e-9, abs_tol=1e-12)
    return f'<td data-v="{value:.10g}"{" class=best" if marked else ""}>{text}</td>'


def _run_links(rows: list[dict[str, Any]], pages: dict[str, str]) -> str:
    return " ".join(f'<a href="{e(pages[r["run_id"]])}">s{e(r["seed"])}</a>' for r in sorted(rows, key=lambda r:
                                                                                                r["seed"]))


def leaderboard_table(rows: pd.DataFrame, runs: dict[tuple, list[dict]], pages: dict[str, str]) -> str:
    """One stream's leaderboard: strategy (and backbone if several), headline columns, each seed's run page."""
    shown = columns(rows)
    several_backbones = rows["backbone"].nunique() > 1
    configs = rows.groupby("strategy")["config_id"].nunique()
    best = {c.field: c.best(rows[c.field]) for c in shown}
    head = ['<th class="label" title="strategy (config id where one strategy has several configurations)">'
            "strategy</th>"]
    head += ['<th class="label" title="backbone">backbone</th>'] if several_backbones else []
    head += [f'<th title="{e(c.tip)}{"; best marked" if c.better else ""}">{e(c.header)}</th>' for c in shown]
    head.append('<th class="label" title="each seed\'s run page">runs</th>')
    body = []
    for _, row in rows.iterrows():
        label = row["strategy"] + (f" [{row['config_id'][:6]}]" if configs[row["strategy"]] > 1 else "")
        cells = [f'<td class="label">{e(label)}</td>']
        cells += [f'<td class="label">{e(row["backbone"])}</td>'] if several_backbones else []
        cells += [cell(row, c, best[c.field]) for c in shown]
        key = (row["stream"], row["strategy"], row["backbone"], row["config_id"])
        cells.append(f'<td class="label">{_run_links(runs.get(key, []), pages)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return scrolling(f'<table class="board"><thead><tr>{"".join(head)}</tr></thead><tbody>{"".join(body)}</tbody>'
                     "</table>")


def published_table(rows: pd.DataFrame) -> str:
    """The stream's rows that have published numbers: published and measured side by side, the difference, whether
    the run's recipe is the published one's, and the number's source."""
    metrics = published_metrics(rows)
    lines = []
    for _, row in rows.iterrows():
        for metric in metrics:
            published = row[f"published_{metric}"]
            if pd.isna(published):
                continue
            measured = row[f"{metric}_mean"]
            lines.append([e(row["strategy"]), e(row["backbone"]), f"{e(metric)} <small>({e(row[f'paper_name_{metric}'])})"
                          "</small>", f"{published:.2f}", "–" if pd.isna(measured) else
                          f"{measured:.2f}{_interval(row, metric)}", "–" if pd.isna(measured) else
                          f"{measured - published:+.2f}", e(row["published_recipe"]),
                          f'{e(row["published_split"])}; {e(row["published_seeds"])}', e(row["published_source"])])
    if not lines:
        return ""
    return "<h3>Published numbers</h3>" + table(
        ["strategy", "backbone", "metric (paper's name)", "published", "measured", "Δ", "recipe", "split; seeds",
         "source"], lines, "Measured: mean over seeds [95% interval]. Δ = measured − published.")


def _plots(stream: str, plots: dict[Group, dict[str, Path]], out_dir: Path) -> str:
    parts = []
    for (group_stream, backbone), named in plots.items():
        if group_stream != stream:
            continue
        parts.append(f"<h3>Plots · {e(backbone)}</h3>")
        for name, png in named.items():
            link = png.relative_to(out_dir).as_posix()
            svg = png.with_suffix(".svg").relative_to(out_dir).as_posix()
            parts.append(f'<figure><img src="{e(link)}" alt="{e(name)} — {e(stream)}">'
                         f'<figcaption>{e(CAPTIONS[name])} <a href="{e(svg)}">SVG</a></figcaption></figure>')
    return "".join(parts)


def _failed_section(results: list[dict[str, Any]], pages: dict[str, str]) -> str:
    failed = [r for r in results if r.get("status") != STATUS_OK]
    if not failed:
        return "<p>None.</p>"
    items = [f'<li class="failed"><a href="{e(pages[r["run_id"]])}">{e(r["run_id"])}</a> ({e(r.get("status"))}): '
             f'{e(r.get("error"))}<details><summary>traceback</summary><pre>{e(r.get("traceback", ""))}</pre>'
             "</details></li>" for r in failed]
    return "<ul>" + "".join(items) + "</ul>"


def _runs_section(results: list[dict[str, Any]], pages: dict[str, str]) -> str:
    rows = [[f'<a href="{e(pages[r["run_id"]])}">{e(r["run_id"])}</a>', e(r.get("status")),
             e(", ".join(f"{k} {v}" for k, v in sorted(r.get("versions", {}).items())))] for r in results]
    return table(["run (its page: matrix, curves, configuration)", "status", "versions"], rows)


def render_html(results: list[dict[str, Any]], table_: pd.DataFrame, plots: dict[Group, dict[str, Path]],
                out_dir: Path, sources: list[Path]) -> Path:
    from reports.leaderboard import config_id, strategy_label

    pages = write_run_pages(results, out_dir, sources)
    runs: dict[tuple, list[dict]] = {}
    for r in results:
        if r.get("status") == STATUS_OK:
            runs.setdefault((r["stream"], strategy_label(r), r["backbone"], config_id(r)), []).append(r)
    finished = sum(r.get("status") == STATUS_OK for r in results)
    streams = list(dict.fromkeys(table_["stream"])) if len(table_) else []
    toc = " · ".join(f'<a href="#{e(s)}">{e(s)}</a>' for s in streams)
    sections = [f'<h2 id="{e(s)}">{e(s)}</h2>' + leaderboard_table(table_[table_["stream"] == s], runs, pages)
                + published_table(table_[table_["stream"] == s]) + _plots(s, plots, out_dir) for s in streams]
    body = f"""<h1>Continual-learning benchmark report</h1>
<p>{finished} finished and {len(results) - finished} failed or diverged runs from {", ".join(e(s) for s in sources)}.
Accuracies in %, mean over seeds, under it the interval over seeds where there are several; best value of each
column in bold (unless all tie). Click a column header to sort. Every column in <a href="leaderboard.csv">leaderboard.csv</a>,
Markdown in <a href="leaderboard.md">leaderboard.md</a>. Streams: {toc or "none"}.</p>
{"".join(sections) or "<p>No finished runs.</p>"}
<h2>Failed and diverged runs</h2>
{_failed_section(results, pages)}
<h2 id="runs">Runs</h2>
{_runs_section(results, pages)}"""
    path = out_dir / "report.html"
    path.write_text(page("Continual-learning benchmark report", body))
    return path
