"""One static page per run, `pages/<run_id>.html` beside report.html: its numbers, its accuracy matrix, its curves
(inline SVG), retention, costs, configuration, versions, and links to its `result.json` and own plots.

Links to the run's files are relative paths from the page to the results folder the run was read from, so the
report opens from disk wherever it was written (`python -m reports A B --out C` links into A and B).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from benchmark.metrics import retention_curves, seen_tasks_curve
from benchmark.results import RESULT_FILE, STATUS_OK, numeric_fields
from reports.page import e, page, scrolling, table
from reports.svg import line_chart

PAGES = "pages"
RUN_PLOTS = ("gate_masks.png",)  # drawn beside result.json by reports.plots.write_run_plots


def page_link(run_id: str) -> str:
    """The run page's path relative to the report folder."""
    return f"{PAGES}/{run_id}.html"


def source_folder(run_id: str, status: Optional[str], sources: Sequence[Path]) -> Optional[Path]:
    """The run's folder in the first results folder holding this run with this status (how `collect` merged)."""
    folders = [s / "runs" / run_id for s in sources if (s / "runs" / run_id / RESULT_FILE).is_file()]
    for folder in folders:
        try:
            if json.loads((folder / RESULT_FILE).read_text()).get("status") == status:
                return folder
        except (OSError, json.JSONDecodeError):
            continue
    return folders[0] if folders else None


def _heat(value: float) -> str:
    """A cell's background: white (0%) to the report's blue (100%); white text on the dark half."""
    share = max(0.0, min(value, 100.0)) / 100
    text = "#fff" if share > 0.6 else "#111"
    return f"background:rgba(31,119,180,{share:.2f});color:{text}"


def matrix_table(matrix: Sequence[Sequence[float]], task_names: Sequence[str], caption: str) -> str:
    """R[i][j] as a heat-coloured table: rows = after training task i, columns = evaluated on task j."""
    names = list(task_names) or [str(j) for j in range(len(matrix))]
    head = "".join(f'<th title="{e(name)}">t{j}</th>' for j, name in enumerate(names))
    rows = "".join(
        f'<tr><th title="{e(names[i])}">after t{i}</th>'
        + "".join(f'<td style="{_heat(v)}">{v:.1f}</td>' for v in row) + "</tr>"
        for i, row in enumerate(matrix))
    return scrolling(f'<table class="matrix"><caption>{e(caption)}</caption><thead><tr><th></th>{head}</tr></thead>'
                     f"<tbody>{rows}</tbody></table>")


def _curves(result: Mapping[str, Any]) -> str:
    matrix = result["accuracy_matrix"]
    per_task = [(f"task {j}", [(i + 1, matrix[i][j]) for i in range(j, len(matrix))]) for j in range(len(matrix))]
    seen = [("mean over seen tasks", list(enumerate(seen_tasks_curve(matrix), start=1)))]
    charts = [line_chart(seen + per_task, x_label="tasks trained", y_label="accuracy (%)",
                         title="Accuracy on each task after each task")]
    retained = [(protocol, list(enumerate(curve))) for protocol, curve in retention_curves(result).items() if curve]
    if retained:
        charts.append(line_chart(retained, x_label="tasks trained (0 = pre-trained model)",
                                 y_label="retained accuracy (%)", title="Retained pre-training accuracy"))
    return "".join(charts)


def _numbers_table(values: Mapping[str, Any], caption: str) -> str:
    rows = [[e(k), "–" if v is None else f"{v:,.4g}" if isinstance(v, float) else f"{v:,}"]
            for k, v in numeric_fields(values).items()]
    return table(["name", "value"], rows, caption=caption)


def _link(target: Path, page_dir: Path) -> str:
    return Path(os.path.relpath(target, page_dir)).as_posix()


def _files(folder: Optional[Path], page_dir: Path) -> str:
    if folder is None:
        return "<p>The run's folder was not found.</p>"
    links = [f'<a href="{e(_link(folder / RESULT_FILE, page_dir))}">result.json</a>']
    images = [f'<figure><img src="{e(_link(folder / name, page_dir))}" alt="{e(name)}"></figure>'
              for name in RUN_PLOTS if (folder / name).is_file()]
    return f'<p>Files: {" · ".join(links)}</p>' + "".join(images)


def finished_body(result: Mapping[str, Any]) -> str:
    parts = ["<h2>Accuracy matrix</h2>",
             matrix_table(result["accuracy_matrix"], result.get("task_names", []),
                          "R[i][j] (%): accuracy on task j after training through task i")]
    if result.get("accuracy_matrix_task_aware"):
        parts.append(matrix_table(result["accuracy_matrix_task_aware"], result.get("task_names", []),
                                  "Task-aware R[i][j] (%): the task id given at prediction"))
    parts += ["<h2>Curves and retention</h2>", _curves(result), '<div class="side">',
              _numbers_table({k: v for k, v in result["metrics"].items() if k != "retained_pretrain_acc"},
                             "Metrics (accuracy points)"),
              _numbers_table(result["cost"], "Costs (counts, FLOPs, seconds, MB)"), "</div>"]
    per_task = [[str(i), f"{t:.2f}", f"{v:.2f}"] for i, (t, v) in
                enumerate(zip(result["cost"].get("train_s", []), result["cost"].get("eval_s", [])))]
    if per_task:
        parts.append(table(["task", "train s", "eval s"], per_task, caption="Time per task"))
    return "".join(parts)


def run_page(result: Mapping[str, Any], folder: Optional[Path], page_dir: Path) -> str:
    title = f"{result['strategy']} on {result['stream']} · {result['backbone']} · seed {result['seed']}"
    status = result.get("status")
    body = [f'<p><a href="../report.html">← report</a></p><h1>{e(title)}</h1>',
            f'<p class="meta">run <code>{e(result["run_id"])}</code>, status <b>{e(status)}</b></p>',
            _files(folder, page_dir)]
    if status == STATUS_OK:
        body.append(finished_body(result))
    else:
        body.append(f'<p class="failed">{e(result.get("error"))}</p><pre>{e(result.get("traceback", ""))}</pre>')
    versions = [[e(k), e(v)] for k, v in sorted(result.get("versions", {}).items())]
    body += ["<h2>Configuration</h2>", f'<pre>{e(json.dumps(result.get("config"), indent=1, sort_keys=True))}</pre>',
             "<h2>Versions</h2>", table(["library", "version"], versions)]
    return page(title, "".join(body))


def write_run_pages(results: Sequence[Mapping[str, Any]], out_dir: Path, sources: Sequence[Path]) -> dict[str, str]:
    """Every run's page under `<out>/pages/`; returns run id -> link relative to the report folder."""
    page_dir = out_dir / PAGES
    page_dir.mkdir(parents=True, exist_ok=True)
    links = {}
    for result in results:
        folder = source_folder(result["run_id"], result.get("status"), sources)
        (out_dir / page_link(result["run_id"])).write_text(run_page(result, folder, page_dir))
        links[result["run_id"]] = page_link(result["run_id"])
    return links
