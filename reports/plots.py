"""Comparison plots from stored results (matplotlib, PNG and SVG), one set per stream and backbone.

Every plot names its stream and backbone in the title, labels its axes with units, keeps its legend outside the
data, and gives each strategy the same colour in every plot. Missing pieces are skipped, not crashed on: one seed
draws no band, a strategy without retention numbers is left out of the retention plots, failed runs are not drawn.
"""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["svg.hashsalt"] = "cl-vit-bench"  # stable SVG ids: same results, same bytes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

import pandas as pd  # noqa: E402

from benchmark.diagnostics import dense_confusion  # noqa: E402
from benchmark.metrics import retention_curves, seen_tasks_curve  # noqa: E402
from benchmark.results import STATUS_OK  # noqa: E402
from benchmark.safe_io import check_name, real_folder, write_atomic  # noqa: E402
from reports.leaderboard import COMPARED, config_id, strategy_label  # noqa: E402
from reports.statistics import t_interval  # noqa: E402


@dataclass
class Series:
    """The seeds of one strategy configuration on one stream and backbone."""

    label: str
    strategy: str
    runs: list[dict[str, Any]]
    comparison: Optional[dict[str, Any]] = None  # its leaderboard row's paired comparison with the stream's best

    def stacked(self, get: Callable[[dict[str, Any]], Any]) -> np.ndarray:
        return np.array([get(run) for run in self.runs], dtype=float)

    def has_retention(self, protocol: str) -> bool:
        return all(retention_curves(run).get(protocol) for run in self.runs)

    @property
    def diagnosed(self) -> bool:
        """Whether every run stores the diagnostics block (results written before it existed do not)."""
        return all("diagnostics" in run for run in self.runs)


def retention_protocols(series: list[Series]) -> list[str]:
    """Retention protocols with numbers for at least one series, in the order the runs name them."""
    names = dict.fromkeys(name for item in series for run in item.runs for name in retention_curves(run))
    return [name for name in names if any(item.has_retention(name) for item in series)]


Group = tuple[str, str]  # (stream, backbone)


def group_series(results: list[dict[str, Any]]) -> dict[Group, list[Series]]:
    """Finished runs grouped by (stream, backbone), then by strategy configuration; a strategy run with several
    configurations gets its config id in the label."""
    by_config: dict[Group, dict[tuple[str, str], list[dict]]] = defaultdict(lambda: defaultdict(list))
    for run in results:
        if run.get("status") == STATUS_OK:
            by_config[(run["stream"], run["backbone"])][(run["strategy"], config_id(run))].append(run)
    groups = {}
    for group, configs in sorted(by_config.items()):
        per_strategy = defaultdict(int)
        for strategy, _ in configs:
            per_strategy[strategy] += 1
        groups[group] = [
            Series(strategy_label(runs[0]) + ("" if per_strategy[strategy] == 1 else f" [{cid[:6]}]"), strategy,
                   sorted(runs, key=lambda r: r["seed"]))
            for (strategy, cid), runs in sorted(configs.items())
        ]
    return groups


def strategy_colours(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One colour per strategy name, the same in every plot of a report."""
    names = sorted({run["strategy"] for run in results})
    palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: palette(i % palette.N) for i, name in enumerate(names)}


def _title(ax: plt.Axes, what: str, group: Group) -> None:
    stream, backbone = group
    ax.set_title(f"{what}\n{stream} · {backbone}", fontsize=10)


def _legend_outside(ax: plt.Axes) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)


def _curve(ax: plt.Axes, x: np.ndarray, values: np.ndarray, series: Series, colour: Any) -> None:
    """Mean over seeds with a ±1 std band when there is more than one seed."""
    mean = values.mean(axis=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    upper_bound = series.runs[0].get("joint_upper_bound", False)  # drawn dashed: a ceiling, not a continual run
    ax.plot(x, mean, marker="o", markersize=3, color=colour, linestyle="--" if upper_bound else "-",
            label=f"{series.label} (n={len(values)})")
    if len(values) > 1:
        std = values.std(axis=0, ddof=1)
        ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)


def accuracy_heatmaps(series: list[Series], group: Group, colours: dict) -> plt.Figure:
    """R[i][j] (mean over seeds) per strategy, annotated."""
    columns = min(len(series), 3)
    rows = -(-len(series) // columns)
    size = len(series[0].runs[0]["accuracy_matrix"])
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns + 0.8, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(series):]:
        ax.axis("off")
    for ax, item in zip(axes.flat, series):
        matrix = item.stacked(lambda r: r["accuracy_matrix"]).mean(axis=0)
        image = ax.imshow(matrix, vmin=0, vmax=100, cmap="viridis")
        if size <= 12:
            for (i, j), value in np.ndenumerate(matrix):
                ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if value < 60 else "black")
        ax.set_xlabel("evaluated on task j")
        ax.set_ylabel("after training task i")
        ax.set_xticks(range(size))
        ax.set_yticks(range(size))
        ax.set_title(f"{item.label} (n={len(item.runs)})", fontsize=9, color=colours[item.strategy])
    fig.colorbar(image, ax=axes, shrink=0.8, label="accuracy (%)")
    fig.suptitle(f"Accuracy matrix R[i][j] — {group[0]} · {group[1]}", fontsize=10)
    return fig


def _draw_curves(ax: plt.Axes, series: list[Series], colours: dict, values_of: Callable[[dict], list[float]],
                 first_x: int, xlabel: str, ylabel: str) -> None:
    """One line per strategy configuration of a per-step percentage (y from 0 to 100), x counted from `first_x`."""
    for item in series:
        values = item.stacked(values_of)
        _curve(ax, np.arange(first_x, first_x + values.shape[1]), values, item, colours[item.strategy])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 100)


def _panels(count: int, width: float = 5.2) -> tuple[plt.Figure, list[plt.Axes]]:
    """A row of `count` axes (one per retention protocol)."""
    fig, axes = plt.subplots(1, count, figsize=(width * count + 1.2, 3.8), squeeze=False)
    return fig, list(axes[0])


def seen_accuracy(series: list[Series], group: Group, colours: dict) -> plt.Figure:
    fig, (ax,) = _panels(1)
    _draw_curves(ax, series, colours, lambda r: seen_tasks_curve(r["accuracy_matrix"]), 1, "tasks trained",
                 "mean accuracy on seen tasks (%)")
    _title(ax, "Average accuracy over seen tasks", group)
    _legend_outside(ax)
    return fig


def retention(series: list[Series], group: Group, colours: dict) -> Optional[plt.Figure]:
    """Retained pre-training accuracy after each task, one panel per retention protocol."""
    protocols = retention_protocols(series)
    if not protocols:
        return None
    fig, axes = _panels(len(protocols))
    for ax, protocol in zip(axes, protocols):
        kept = [item for item in series if item.has_retention(protocol)]
        _draw_curves(ax, kept, colours, lambda r: retention_curves(r)[protocol], 0,
                     "tasks trained (0 = pre-trained model)", f"retained pre-training accuracy, {protocol} (%)")
        _title(ax, f"What the pre-trained model keeps ({protocol})", group)
    _legend_outside(axes[-1])
    return fig


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both axes (higher is better on both), by increasing x."""
    front = [p for p in points if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points)]
    return sorted(set(front))


def _marker_size(params: float) -> float:
    return 20 + 25 * np.log10(max(params, 1.0))


def stability_plasticity(series: list[Series], group: Group, colours: dict) -> Optional[plt.Figure]:
    """Final avg_acc against retained pre-training accuracy, one panel (and Pareto front) per retention protocol."""
    protocols = retention_protocols(series)
    if not protocols:
        return None
    fig, axes = _panels(len(protocols), width=5.6)
    for ax, protocol in zip(axes, protocols):
        points = []
        for item in series:
            if not item.has_retention(protocol):
                continue
            x = item.stacked(lambda r: r["metrics"]["avg_acc"]).mean()
            y = item.stacked(lambda r: retention_curves(r)[protocol][-1]).mean()
            params = item.runs[0]["cost"]["params_trainable"]
            ax.scatter([x], [y], s=_marker_size(params), color=colours[item.strategy], alpha=0.8,
                       edgecolors="black", linewidths=0.5, label=f"{item.label} ({params:,} trainable)")
            points.append((float(x), float(y)))
        front = pareto_front(points)
        ax.plot(*zip(*front), linestyle="--", color="grey", linewidth=1, label="Pareto front")
        ax.set_xlabel("final average accuracy on the stream, avg_acc (%)")
        ax.set_ylabel(f"retained pre-training accuracy, {protocol} (%)")
        _title(ax, f"Stability vs plasticity, {protocol} (marker area ~ log trainable parameters)", group)
    _legend_outside(axes[-1])
    return fig


def accuracy_vs_parameters(series: list[Series], group: Group, colours: dict) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for item in series:
        accs = item.stacked(lambda r: r["metrics"]["avg_acc"])
        params = max(item.runs[0]["cost"]["params_trainable"], 1)
        ax.errorbar([params], [accs.mean()], yerr=[accs.std(ddof=1)] if len(accs) > 1 else None, fmt="o",
                    color=colours[item.strategy], capsize=3, label=f"{item.label} (n={len(accs)})")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (count, log scale)")
    ax.set_ylabel("final average accuracy, avg_acc (%)")
    _title(ax, "Accuracy against trainable parameters", group)
    _legend_outside(ax)
    return fig


def draw_gate_masks(ax: plt.Axes, run: dict[str, Any], title: str, colour: Any = "black") -> None:
    """A run's gate masks as a heatmap: rows = tasks, columns = adapter blocks grouped by transformer block (named
    `<block>.<layer>` in `gate_blocks` when the run stores them), black = active."""
    masks = np.array(run["gate_masks"], dtype=float)
    ax.imshow(masks, cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    names = run.get("gate_blocks")
    if names:
        layers = [name.split(".")[0] for name in names]
        starts = [i for i, layer in enumerate(layers) if i == 0 or layer != layers[i - 1]]
        for start in starts[1:]:
            ax.axvline(start - 0.5, color="tab:red", linewidth=0.6)
        ax.set_xticks([start + (end - start - 1) / 2 for start, end in zip(starts, starts[1:] + [len(layers)])])
        ax.set_xticklabels([layers[start] for start in starts], fontsize=7)
        ax.set_xlabel(f"transformer block (each: {', '.join(n.split('.', 1)[1] for n in names[:starts[1]])})"
                      if len(starts) > 1 else "adapter block")
    else:
        ax.set_xlabel("adapter block (index)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("task")
    ax.set_yticks(range(len(masks)))
    ax.set_title(f"{title}: {100 * masks.mean():.1f}% of blocks active (black = on)", fontsize=9, color=colour)


def gate_masks(series: list[Series], group: Group, colours: dict) -> Optional[plt.Figure]:
    """Per-task binary gate masks (tasks x adapter blocks) of strategies that store them (`gate_masks`)."""
    masked = [(item, item.runs[0]) for item in series if item.runs[0].get("gate_masks")]
    if not masked:
        return None
    height = 1.5 + 0.5 * sum(len(run["gate_masks"]) + 1 for _, run in masked)
    fig, axes = plt.subplots(len(masked), 1, figsize=(8, height), squeeze=False, constrained_layout=True)
    for ax, (item, run) in zip(axes[:, 0], masked):
        draw_gate_masks(ax, run, f"{item.label}, seed {run['seed']}", colours[item.strategy])
    fig.suptitle(f"Selective LoRA gate masks — {group[0]} · {group[1]}", fontsize=10)
    return fig


def _distinguishable(item: Series) -> bool:
    """Whether the leaderboard found `item` different from the stream's best."""
    found = item.comparison
    return bool(found) and not pd.isna(found["indistinguishable_from_best"]) and not found[
        "indistinguishable_from_best"]


def _verdict(item: Series) -> str:
    """The leaderboard's comparison of `item` with the stream's best, short."""
    found = item.comparison
    if not found or pd.isna(found["indistinguishable_from_best"]):
        return "not compared (< 2 paired seeds)"
    if pd.isna(found["p_vs_best"]):
        return "best"
    sign = "≈" if found["indistinguishable_from_best"] else ("<" if found["diff_vs_best"] < 0 else ">")
    return f"{sign} best, Holm p={found['p_vs_best_holm']:.3f}"


def intervals(series: list[Series], group: Group, colours: dict) -> plt.Figure:
    """Final avg_acc per strategy: bar = mean over seeds, whiskers = 95% t-interval, dots = the seeds; hatched bars
    are distinguishable from the stream's best (Holm-corrected paired t-test)."""
    ranked = sorted(series, key=lambda item: item.stacked(lambda r: r["metrics"][COMPARED]).mean())
    fig, ax = plt.subplots(figsize=(7.2, 0.9 + 0.45 * len(ranked)))
    for y, item in enumerate(ranked):
        values = item.stacked(lambda r: r["metrics"][COMPARED])
        low, high = t_interval(values)
        worse = _distinguishable(item)
        ax.barh(y, values.mean(), color=colours[item.strategy], alpha=0.45 if worse else 0.85,
                hatch="//" if worse else None, edgecolor="black", linewidth=0.5)
        if not np.isnan(low):
            ax.errorbar([values.mean()], [y], xerr=[[values.mean() - low], [high - values.mean()]], fmt="none",
                        ecolor="black", capsize=3, linewidth=1)
        ax.scatter(values, np.full(len(values), y), s=10, color="black", zorder=3)
        ax.text(1.01, y, f"{_verdict(item)} (n={len(values)})", transform=ax.get_yaxis_transform(), va="center",
                fontsize=7)
    ax.set_yticks(range(len(ranked)))
    ax.set_yticklabels([item.label for item in ranked], fontsize=8)
    ax.set_xlim(0, 100)
    ax.set_xlabel("final average accuracy, avg_acc (%): mean, 95% t-interval, seeds")
    _title(ax, "Strategies against the best, paired by seed", group)
    return fig


def old_new_accuracy(series: list[Series], group: Group, colours: dict) -> Optional[plt.Figure]:
    """After each task: accuracy on the earlier tasks' test sets (left) and on the new task's (right)."""
    kept = [item for item in series if item.diagnosed]
    if not kept:
        return None
    fig, axes = _panels(2)
    for ax, key, what in zip(axes, ("old_acc", "new_acc"), ("earlier tasks (old classes)", "the new task")):
        _draw_curves(ax, kept, colours, lambda r: [np.nan if v is None else v for v in r["diagnostics"][key]], 1,
                     "tasks trained", f"accuracy on {what} (%)")
        ax.set_xlim(0.5, len(kept[0].runs[0]["accuracy_matrix"]) + 0.5)  # old: nothing to draw after task 1
        _title(ax, f"Accuracy on {what}", group)
    _legend_outside(axes[-1])
    return fig


def calibration(series: list[Series], group: Group, colours: dict) -> Optional[plt.Figure]:
    """Expected calibration error (15 bins) over the seen tasks' test images after each task."""
    kept = [item for item in series if item.diagnosed]
    if not kept:
        return None
    fig, (ax,) = _panels(1)
    _draw_curves(ax, kept, colours, lambda r: r["diagnostics"]["ece"], 1, "tasks trained",
                 "expected calibration error (%)")
    ax.set_ylim(0, max(5.0, 1.1 * max(max(r["diagnostics"]["ece"]) for item in kept for r in item.runs)))
    _title(ax, "Calibration on the seen tasks (lower is better)", group)
    _legend_outside(ax)
    return fig


def class_confusion(run: dict[str, Any]) -> np.ndarray:
    """A run's last confusion matrix indexed by original class id (unit u is class `class_order[u]`), so runs with
    different class orders add up."""
    order = run["class_order"]
    units = np.array(dense_confusion(run["diagnostics"]["confusion"], len(order)))
    by_class = np.zeros_like(units)
    by_class[np.ix_(order, order)] = units
    return by_class


def confusion(series: list[Series], group: Group, colours: dict) -> Optional[plt.Figure]:
    """Confusion matrix after the last task per strategy (seeds summed, rows normalised to %), by class id."""
    kept = [item for item in series if item.diagnosed]
    if not kept:
        return None
    columns = min(len(kept), 3)
    rows = -(-len(kept) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns + 0.8, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(kept):]:
        ax.axis("off")
    for ax, item in zip(axes.flat, kept):
        counts = sum(class_confusion(run) for run in item.runs)
        percent = 100 * counts / np.maximum(counts.sum(1, keepdims=True), 1)
        image = ax.imshow(percent, vmin=0, vmax=100, cmap="magma")
        if len(percent) <= 12:
            ax.set_xticks(range(len(percent)))
            ax.set_yticks(range(len(percent)))
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"{item.label} (n={len(item.runs)})", fontsize=9, color=colours[item.strategy])
    fig.colorbar(image, ax=axes, shrink=0.8, label="share of the true class (%)")
    fig.suptitle(f"Confusion after the last task — {group[0]} · {group[1]}", fontsize=10)
    return fig


def write_run_plots(result: dict[str, Any], folder: Path) -> list[Path]:
    """Plots that belong to one run, written beside its result.json: its gate masks, if it stores them."""
    if not result.get("gate_masks"):
        return []
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.5 * len(result["gate_masks"])), constrained_layout=True)
    draw_gate_masks(ax, result, f"{result['strategy']} on {result['stream']}, seed {result['seed']}")
    path = folder / "gate_masks.png"
    save_figure(fig, path, dpi=120)
    return [path]


def save_figure(fig: plt.Figure, path: Path, keep: bool = False, **options: Any) -> None:
    """Save `fig` in the format its suffix names, whole and never through a link (`benchmark.safe_io`), without a
    date stamp (same results, same bytes); closed unless `keep`."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix[1:], metadata={"Date": None}, **options)
    write_atomic(path, buffer.getvalue())
    if not keep:
        plt.close(fig)


PLOTS: dict[str, Callable[[list[Series], Group, dict], Optional[plt.Figure]]] = {
    "accuracy_matrix": accuracy_heatmaps,
    "seen_accuracy": seen_accuracy,
    "retention": retention,
    "stability_plasticity": stability_plasticity,
    "accuracy_vs_params": accuracy_vs_parameters,
    "gate_masks": gate_masks,
    "intervals": intervals,
    "old_new": old_new_accuracy,
    "calibration": calibration,
    "confusion": confusion,
}


def attach_comparisons(groups: dict[Group, list[Series]], table: Optional[pd.DataFrame]) -> None:
    """Give each series its leaderboard row's comparison columns, so plots show what the leaderboard says."""
    if table is None or table.empty:
        return
    rows = table.set_index(["stream", "backbone", "strategy", "config_id"])
    for (stream, backbone), series in groups.items():
        for item in series:
            key = (stream, backbone, item.strategy, config_id(item.runs[0]))
            if key in rows.index:
                item.comparison = rows.loc[key].to_dict()


def render_plots(results: list[dict[str, Any]], out_dir: Path,
                 table: Optional[pd.DataFrame] = None) -> dict[Group, dict[str, Path]]:
    """Every plot of every (stream, backbone) as `<out>/plots/<stream>__<backbone>__<plot>.{png,svg}`; returns the
    PNG paths by group and plot name. `table`: the leaderboard, whose comparisons the interval plot shows."""
    colours = strategy_colours(results)
    folder = real_folder(out_dir, "plots")
    rendered: dict[Group, dict[str, Path]] = {}
    groups = group_series(results)
    attach_comparisons(groups, table)
    for group, series in groups.items():
        rendered[group] = {}
        for name, plot in PLOTS.items():
            fig = plot(series, group, colours)
            if fig is None:
                continue
            stem = folder / f"{check_name(group[0], 'stream')}__{check_name(group[1], 'backbone')}__{name}"
            save_figure(fig, stem.with_suffix(".png"), dpi=120, bbox_inches="tight", keep=True)
            save_figure(fig, stem.with_suffix(".svg"), dpi=120, bbox_inches="tight")
            rendered[group][name] = stem.with_suffix(".png")
    return rendered
