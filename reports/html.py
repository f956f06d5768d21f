"""`report.html`: one static page with the leaderboards, every plot, failed runs, configurations and versions.

Plain HTML and inline CSS, no scripts, no network; images are PNG files beside the page (with SVG links), so the
page opens from the file system.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.results import STATUS_OK
from reports.leaderboard import retention_columns
from reports.plots import Group

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
th { background: #f2f2f2; } td:nth-child(-n+3) { text-align: left; white-space: nowrap; }
.scroll { overflow-x: auto; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figcaption { font-size: 0.8em; color: #555; }
img { max-width: 100%; }
pre { font-size: 0.75em; background: #f7f7f7; padding: 0.5em; overflow-x: auto; }
.failed { color: #a00; }
"""
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


def _e(value: Any) -> str:
    return html.escape(str(value))


def _leaderboard_table(table: pd.DataFrame) -> str:
    retention = [f"{metric}_mean" for metric in retention_columns(table)]
    shown = table[["stream", "strategy", "backbone", "avg_acc_mean", "avg_acc_ci_low", "avg_acc_ci_high",
                   "avg_inc_acc_mean", "bwt_mean", "forgetting_mean", *retention, "params_trainable", "params_added",
                   "flops_per_image", "wall_time_s", "n_seeds", "p_vs_best_holm", "indistinguishable_from_best"]]
    return shown.to_html(index=False, na_rep="–", float_format=lambda v: f"{v:.2f}", border=0)


def _plots_section(plots: dict[Group, dict[str, Path]], out_dir: Path) -> str:
    parts = []
    for (stream, backbone), named in plots.items():
        parts.append(f"<h3>{_e(stream)} · {_e(backbone)}</h3>")
        for name, png in named.items():
            link = png.relative_to(out_dir).as_posix()
            svg = png.with_suffix(".svg").relative_to(out_dir).as_posix()
            parts.append(f'<figure><img src="{_e(link)}" alt="{_e(name)} — {_e(stream)}">'
                         f'<figcaption>{_e(CAPTIONS[name])} <a href="{_e(svg)}">SVG</a></figcaption></figure>')
    return "\n".join(parts) or "<p>No finished runs to plot.</p>"


def _failed_section(results: list[dict[str, Any]]) -> str:
    failed = [r for r in results if r.get("status") != STATUS_OK]
    if not failed:
        return "<p>None.</p>"
    items = [f'<li class="failed"><b>{_e(r["run_id"])}</b> ({_e(r.get("status"))}): {_e(r.get("error"))}'
             f'<details><summary>traceback</summary><pre>{_e(r.get("traceback", ""))}</pre></details></li>'
             for r in failed]
    return "<ul>" + "\n".join(items) + "</ul>"


def _runs_section(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        versions = ", ".join(f"{k} {v}" for k, v in sorted(r.get("versions", {}).items()))
        rows.append(f"<tr><td>{_e(r['run_id'])}</td><td>{_e(r.get('status'))}</td><td>{_e(versions)}</td>"
                    f"<td><details><summary>config</summary><pre>{_e(json.dumps(r.get('config'), indent=1))}"
                    f"</pre></details></td></tr>")
    return ("<table><tr><th>run</th><th>status</th><th>versions</th><th>configuration</th></tr>"
            + "\n".join(rows) + "</table>")


def render_html(results: list[dict[str, Any]], table: pd.DataFrame, plots: dict[Group, dict[str, Path]],
                out_dir: Path, sources: list[Path]) -> Path:
    finished = sum(r.get("status") == STATUS_OK for r in results)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Continual-learning benchmark report</title>
<style>{STYLE}</style></head><body>
<h1>Continual-learning benchmark report</h1>
<p>{finished} finished and {len(results) - finished} failed or diverged runs from {", ".join(_e(s) for s in sources)}.
Accuracies in %, mean over seeds with the 95% t-interval where there are several; p_vs_best_holm: the
Holm-corrected paired t-test against the stream's best (indistinguishable_from_best: not rejected); full columns in
<a href="leaderboard.csv">leaderboard.csv</a>, Markdown in <a href="leaderboard.md">leaderboard.md</a>.</p>
<h2>Leaderboard</h2>
<div class="scroll">{_leaderboard_table(table)}</div>
<h2>Plots</h2>
{_plots_section(plots, out_dir)}
<h2>Failed and diverged runs</h2>
{_failed_section(results)}
<h2>Runs, configurations and versions</h2>
{_runs_section(results)}
</body></html>
"""
    path = out_dir / "report.html"
    path.write_text(page)
    return path
