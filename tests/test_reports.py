"""Reports from small fabricated results, edge cases included: several seeds, one seed, a failed run, a strategy
without retention numbers, a one-task stream, gate masks."""

import math
import re
import shutil
import sys
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchmark.config import ComparisonConfig
from benchmark.diagnostics import after_task, run_diagnostics
from benchmark.metrics import summarize
from benchmark.results import SCHEMA_VERSION, RunSpec, iter_results, result_path, write_json_atomic
from reports.__main__ import main as reports_main
from reports.leaderboard import build_leaderboard, verdict
from reports.plots import class_confusion, pareto_front
from reports.report import collect


def fabricate(out: Path, stream: str, strategy: str, seed: int, matrix, retained, params=1000, **extra) -> dict:
    """A result as the runner writes it; `retained` is one protocol's curve (head) or a mapping protocol -> curve."""
    curves = retained if isinstance(retained, dict) else {"head": retained}
    retention = {"protocols": {name: {} for name in curves}, "eval_size": 100, "subset_seed": 0}
    spec = RunSpec(stream, {}, strategy, {"lr": 0.1}, "vit-mini", {}, seed, retention, "cpu", "fp32")
    sizes = [10] * len(matrix)
    units = [[2 * t, 2 * t + 1] for t in range(len(matrix))]
    order = list(range(2 * len(matrix)))[::(-1) ** seed]  # seeds see different class orders
    logits = torch.eye(2 * len(matrix)).repeat_interleave(5, 0)[:, torch.tensor(order)]  # 5 images per class
    steps = [after_task(logits[:, : 2 * (i + 1)], logits.argmax(1), sizes, units, i) for i in range(len(matrix))]
    block, added = run_diagnostics(steps, matrix, sizes, units, [[0, 0, 4], [0, 1, 1], [1, 1, 5]])
    result = {
        "run_id": spec.run_id, "status": "ok", "stream": stream, "strategy": strategy, "backbone": "vit-mini",
        "seed": seed, "config": spec.as_dict(), "accuracy_matrix": matrix, "test_sizes": sizes,
        "metrics": {**summarize(matrix, sizes, curves), **added}, "diagnostics": block, "class_order": order,
        "schema_version": SCHEMA_VERSION,
        "retention_protocols": list(curves),
        "cost": {"params_trainable": params, "params_added": 10, "flops_per_image": 2000, "wall_time_s": 1.5},
        "versions": {"python": "3.11", "torch": "2.x"}, **extra,
    }
    write_json_atomic(result_path(out, spec.run_id), result)
    return result


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    out = tmp_path / "results"
    fabricate(out, "split", "full_ft", 0, [[90, 0], [40, 80]], [80, 70, 60], params=5000)
    fabricate(out, "split", "full_ft", 1, [[94, 0], [50, 90]], [80, 72, 64], params=5000)
    fabricate(out, "split", "linear", 0, [[70, 0], [60, 70]], [80, 80, 80], params=20)
    fabricate(out, "split", "no_retention", 0, [[60, 0], [30, 50]], [])
    fabricate(out, "split", "gated", 0, [[80, 0], [70, 75]], [80, 78, 77], gate_masks=[[1, 0, 1, 0], [0, 0, 1, 1]])
    fabricate(out, "one-task", "linear", 0, [[55.0]], [80, 80])
    fabricate(out, "split", "both", 0, [[85, 0], [50, 85]], {"head": [80, 70, 60], "knn": [75, 74, 70]})
    failed = RunSpec("split", {}, "broken", {}, "vit-mini", {}, 0, {}, "cpu", "fp32")
    write_json_atomic(result_path(out, failed.run_id), {"schema_version": SCHEMA_VERSION,
        "run_id": failed.run_id, "status": "failed", "stream": "split", "strategy": "broken", "backbone": "vit-mini",
        "seed": 0, "config": failed.as_dict(), "error": "RuntimeError: boom <tag>", "traceback": "Traceback ..."})
    return out


def test_leaderboards_hold_means_and_stds_over_seeds(results_dir, tmp_path):
    out = tmp_path / "report"
    assert reports_main([str(results_dir), "--out", str(out)]) == 0
    board = pd.read_csv(out / "leaderboard.csv").set_index("strategy")
    full = board[board["stream"] == "split"].loc["full_ft"]
    assert full["avg_acc_mean"] == pytest.approx(((40 + 80) / 2 + (50 + 90) / 2) / 2)
    assert full["avg_acc_std"] == pytest.approx(pd.Series([60.0, 70.0]).std(), abs=1e-4)  # CSV: 4 decimals
    assert full["pretrain_drop_head_mean"] == pytest.approx(18.0) and full["pretrain_drop_head_std"] == pytest.approx(
        pd.Series([20.0, 16.0]).std(), abs=1e-4)
    assert full["n_seeds"] == 2 and full["params_trainable"] == 5000
    assert pd.isna(board[board["stream"] == "split"].loc["linear", "avg_acc_std"])
    one_task = board[board["stream"] == "one-task"].loc["linear"]
    assert pd.isna(one_task["bwt_mean"]) and one_task["avg_acc_mean"] == 55.0
    assert "broken" not in board.index
    split = pd.read_csv(out / "leaderboard_split.csv")
    assert list(split["strategy"]) == ["gated", "both", "full_ft", "linear", "no_retention"]  # best first; ties by name
    markdown = (out / "leaderboard.md").read_text()
    # seeds at 60 and 70: the t-interval of their logits, mapped back (the plain one, [1.47, 128.53], leaves [0, 100])
    assert "| 65.00 [10.15, 96.87] |" in markdown and "no_retention" in markdown


def test_each_retention_protocol_gets_its_own_columns(results_dir, tmp_path):
    out = tmp_path / "report"
    reports_main([str(results_dir), "--out", str(out)])
    board = pd.read_csv(out / "leaderboard_split.csv").set_index("strategy")
    assert board.loc["both", "retained_last_head_mean"] == 60 and board.loc["both", "pretrain_drop_head_mean"] == 20
    assert board.loc["both", "retained_last_knn_mean"] == 70 and board.loc["both", "pretrain_drop_knn_mean"] == 5
    assert pd.isna(board.loc["full_ft", "pretrain_drop_knn_mean"])  # scored with the head protocol only
    header = (out / "leaderboard.md").read_text().splitlines()[0]
    assert "retained_last_knn" in header and "pretrain_drop_head" in header


def test_every_plot_is_rendered_and_linked(results_dir, tmp_path):
    out = tmp_path / "report"
    reports_main([str(results_dir), "--out", str(out)])
    plots = {p.name for p in (out / "plots").iterdir()}
    for name in ("accuracy_matrix", "seen_accuracy", "retention", "stability_plasticity", "accuracy_vs_params",
                 "gate_masks", "intervals", "old_new", "calibration", "confusion"):
        assert {f"split__vit-mini__{name}.png", f"split__vit-mini__{name}.svg"} <= plots
    assert "one-task__vit-mini__gate_masks.png" not in plots  # nothing to show there
    page = (out / "report.html").read_text()
    linked = set(re.findall(r'<img src="([^"]+)"', page))
    assert linked == {f"plots/{name}" for name in plots if name.endswith(".png")}
    for strategy in ("full_ft", "linear", "no_retention", "gated", "broken"):
        assert strategy in page
    assert "RuntimeError: boom &lt;tag&gt;" in page  # failed runs listed, escaped
    assert "p vs best" in page and "≈ best" in page  # the paired comparison's columns


def test_several_result_folders_merge_into_one_report(results_dir, tmp_path):
    other = tmp_path / "other"
    fabricate(other, "split", "extra", 0, [[10, 0], [10, 10]], [80, 50, 40])
    shutil.copytree(results_dir / "runs", other / "runs", dirs_exist_ok=True)  # duplicates merge by run id
    out = tmp_path / "merged"
    assert reports_main([str(results_dir), str(other), "--out", str(out)]) == 0
    board = pd.read_csv(out / "leaderboard.csv")
    assert "extra" in set(board["strategy"]) and (board["n_seeds"] <= 2).all()


def test_leaderboard_intervals_and_comparison_columns(results_dir, tmp_path):
    out = tmp_path / "report"
    reports_main([str(results_dir), "--out", str(out)])
    board = pd.read_csv(out / "leaderboard_split.csv").set_index("strategy")
    full = board.loc["full_ft"]
    logits = pd.Series([60.0, 70.0]).map(lambda v: math.log(v / (100 - v)))
    half = 12.706204736 * logits.std() / 2 ** 0.5  # t_{0.975, 1} on the logit scale, then mapped back
    expected = [100 / (1 + math.exp(-(logits.mean() + sign * half))) for sign in (-1, 1)]
    assert [full["avg_acc_ci_low"], full["avg_acc_ci_high"]] == pytest.approx(expected, abs=1e-4)
    assert pd.isna(board.loc["linear", "avg_acc_ci_low"]) and pd.isna(board.loc["linear", "avg_acc_ci_high"])
    assert set(board["reference"]) == {"gated"} and board.loc["gated", "indistinguishable_from_best"]
    assert (board.drop("gated")["n_pairs"] == 1).all()  # seed 0 shared; one pair is no test
    assert board.drop("gated")["indistinguishable_from_best"].isna().all()
    assert "forward_transfer_mean" in board and "til_avg_acc_mean" in board and "ece_last_ci_low" in board
    markdown = (out / "leaderboard.md").read_text()
    assert "| best " in markdown and "vs best" in markdown.splitlines()[0]
    named = build_leaderboard(collect([results_dir])[0], ComparisonConfig(reference="linear"))
    assert set(named[named["stream"] == "split"]["reference"]) == {"linear"}
    assert reports_main([str(results_dir), "--out", str(out), "--level", "2"]) == 2


def test_confusion_plots_add_runs_by_original_class():
    run = {"class_order": [1, 0], "diagnostics": {"confusion": [[0, 0, 3], [0, 1, 1], [1, 1, 2]]}}
    assert class_confusion(run).tolist() == [[2, 0], [1, 3]]  # unit 0 is class 1, unit 1 is class 0


def test_pareto_front_keeps_the_undominated_points():
    assert pareto_front([(50, 90), (60, 80), (55, 70), (40, 95), (60, 60)]) == [(40, 95), (50, 90), (60, 80)]


def test_missing_results_folder_is_a_one_line_error(tmp_path, capsys):
    assert reports_main([str(tmp_path / "nowhere")]) == 2
    assert "holds no runs/ folder" in capsys.readouterr().err


CHECK = """<script>
var errors = 0;
window.addEventListener('error', function () { errors += 1; }, true);
var original = console.error; console.error = function () { errors += 1; original.apply(console, arguments); };
window.addEventListener('load', function () {
  var images = Array.from(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length;
  document.body.setAttribute('data-check', 'images=' + images.length + ' broken=' + broken + ' errors=' + errors);
});
</script>"""


def chromium() -> str:
    """Debian's chromium, installed here when missing and possible; otherwise the test is skipped with the reason."""
    path = shutil.which("chromium")
    if path is None and shutil.which("apt-get"):
        for command in (["apt-get", "install", "-y", "-q", "chromium"], ["apt-get", "update", "-q"],
                        ["apt-get", "install", "-y", "-q", "chromium"]):
            subprocess.run(command, capture_output=True, timeout=900)
            path = shutil.which("chromium")
            if path:
                break
    if path is None:
        pytest.skip("Debian's chromium is not installed and could not be installed here")
    return path


def browser_check(page: Path, profile: Path) -> tuple[int, int, int]:
    """Open `page` (plus a probe script) in headless Chromium; return (images, broken images, errors) it saw."""
    checked = page.with_name("checked.html")
    checked.write_text(page.read_text().replace("<head>", "<head>" + CHECK, 1))
    process = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
         "--virtual-time-budget=5000", "--dump-dom", checked.as_uri()],
        capture_output=True, text=True, timeout=120)
    found = re.search(r'data-check="images=(\d+) broken=(\d+) errors=(\d+)"', process.stdout)
    assert found, process.stderr[-2000:]
    return tuple(map(int, found.groups()))


def test_report_renders_in_headless_chromium(results_dir, tmp_path):
    out = tmp_path / "report"
    reports_main([str(results_dir), "--out", str(out)])
    pngs = sorted((out / "plots").glob("*.png"))
    drawn = {png.stem.split("__")[-1] for png in pngs}
    assert {"intervals", "old_new", "calibration", "confusion"} <= drawn  # the statistics and diagnostics plots
    assert browser_check(out / "report.html", tmp_path / "profile") == (len(pngs), 0, 0)
    pngs[0].unlink()  # the probe does see a missing image
    assert browser_check(out / "report.html", tmp_path / "profile")[1] == 1


def test_joint_upper_bounds_are_neither_the_reference_nor_compared(tmp_path):
    out = tmp_path / "results"
    for seed, (continual, other, joint) in enumerate([(60, 50, 95), (62, 49, 96), (61, 52, 94)]):
        fabricate(out, "split", "full_ft", seed, [[continual, 0], [continual, continual]], [80, 70, 60])
        fabricate(out, "split", "linear", seed, [[other, 0], [other, other]], [80, 80, 80])
        fabricate(out, "split", "full_ft@joint", seed, [[joint, joint], [joint, joint]], [80, 70],
                  joint_upper_bound=True)
    table = build_leaderboard(iter_results(out))
    rows = {row["strategy"]: row for _, row in table.iterrows()}
    assert set(table["reference"].dropna()) == {"full_ft"}  # the best continual mean, not the upper bound's
    joint = rows["full_ft@joint (joint upper bound)"]
    assert pd.isna(joint["p_vs_best"]) and pd.isna(joint["indistinguishable_from_best"])
    assert verdict(joint) == "upper bound" and verdict(rows["full_ft"]) == "best"
    assert rows["linear"]["n_pairs"] == 3 and rows["linear"]["diff_vs_best"] < 0


def test_the_docs_results_table_is_regenerated_from_result_files(results_dir):  # noqa: F811
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    try:
        from results_table import table
    finally:
        sys.path.pop(0)
    lines = table([results_dir]).splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:5] == ["stream", "strategy", "avg_acc", "avg_inc_acc", "bwt"] and "pretrain_drop knn" in header
    rows = {tuple(c.strip() for c in line.strip("|").split("|"))[:3] for line in lines[2:]}
    assert ("split", "full_ft", "65.00") in rows  # seeds 0 and 1: (40 + 80) / 2 and (50 + 90) / 2, averaged
    assert ("one-task", "linear", "55.00") in rows and not any(r[1] == "broken" for r in rows)  # failed runs left out


def test_the_results_tables_are_written_between_their_markers_and_nothing_on_a_bad_file(results_dir, tmp_path):  # noqa: F811,E501
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    try:
        from results_table import main, table
    finally:
        sys.path.pop(0)
    wide = table([results_dir], "wide").splitlines()
    assert wide[0].split("|")[1].strip() == "strategy" and "split avg_acc" in wide[0] and "one-task drop" in wide[0]
    full_ft = next(line for line in wide if line.startswith("| full_ft "))
    assert full_ft.split("|")[2].strip() == "65.00"  # the mean over seeds, as in the long table
    page, plain = tmp_path / "page.md", tmp_path / "plain.md"
    page.write_text("intro\n<!-- results-table: wide -->\nold\n<!-- /results-table -->\nmiddle\n"
                    "<!-- results-table: long -->\n<!-- /results-table -->\nend\n")
    plain.write_text("no marker here\n")
    assert main([str(results_dir), "--write", str(page), "--write", str(plain)]) == 2
    assert "old" in page.read_text()  # checked every file before writing any
    assert main([str(results_dir), "--write", str(page)]) == 0
    text = page.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("end\n")
    assert "\n".join(wide) in text and table([results_dir], "long") in text
    assert main([str(results_dir), "--write", str(page)]) == 0 and page.read_text() == text  # idempotent
