"""The suite end to end through its command line, on the tiny backbone and the real digits streams."""

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import run_suite
from conftest import builtin_strategies
from benchmark.config import load_suite
from benchmark.registry import entry_name
from benchmark.results import iter_results
from benchmark.runtime import Runtime
from benchmark.suite import plan_runs
from strategies import STRATEGIES
from strategies.base import Strategy, register
from strategies._loop import fit
from strategies.linear import LinearConfig, LinearProbe

ROOT = Path(__file__).resolve().parents[1]


def suite(config: Path, out: Path, *extra: str) -> int:
    return run_suite.main(["--config", str(config), "--out", str(out), "--quiet", *extra])


def results_by_strategy(out: Path) -> dict:
    return {r["strategy"]: r for r in iter_results(out)}


def snapshot(out: Path) -> dict:
    return {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_suite_writes_results_and_leaderboard(write_suite, tmp_path):
    out = tmp_path / "out"
    assert suite(write_suite(), out) == 0
    results = results_by_strategy(out)
    assert set(results) == {"full_ft", "linear"}
    for result in results.values():
        assert result["status"] == "ok" and result["scenario"] == "class-incremental"
        matrix = result["accuracy_matrix"]
        assert len(matrix) == 5 and all(len(row) == 5 for row in matrix)
        assert all(matrix[i][j] == 0.0 for i in range(5) for j in range(i + 1, 5))  # unseen classes: no logits
        assert len(result["metrics"]["retained_pretrain_acc"]) == 6
        assert result["task_classes"] == [[result["class_order"][2 * t], result["class_order"][2 * t + 1]]
                                          for t in range(5)]
        assert result["retention_protocols"] == ["head"] and result["retention_eval"]["size"] == 100
        assert set(result["versions"]) == {"python", "torch", "timm", "avalanche", "git_commit"}
        assert len(result["cost"]["train_s"]) == 5 and result["cost"]["flops_per_image"] > 0
        assert result["run_id"].startswith(f"mini-split-digits__{result['strategy']}__vit-mini__seed1993__")
    # A frozen backbone keeps exactly the pre-trained features, so nothing of the pre-training domain is lost.
    assert results["linear"]["metrics"]["pretrain_drop"] == 0.0
    board = pd.read_csv(out / "leaderboard.csv")
    assert sorted(board["strategy"]) == ["full_ft", "linear"] and (board["n_seeds"] == 1).all()
    assert board["avg_acc_std"].isna().all()
    row = board.set_index("strategy").loc["linear"]
    assert row["avg_acc_mean"] == pytest.approx(results["linear"]["metrics"]["avg_acc"], abs=1e-4)


def test_rerun_resumes_and_changes_nothing(write_suite, tmp_path, capsys):
    config, out = write_suite(strategies={"linear": {"epochs": 1}}), tmp_path / "out"
    assert suite(config, out) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert suite(config, out) == 0
    assert "0 runs done, 1 already finished, 0 failed, 0 diverged" in capsys.readouterr().out
    assert snapshot(out) == before


def test_changed_hyper_parameter_is_a_new_run(write_suite, tmp_path):
    out = tmp_path / "out"
    suite(write_suite(strategies={"linear": {"epochs": 1}}), out)
    suite(write_suite(strategies={"linear": {"epochs": 1, "lr": 0.05}}), out)
    assert len(list(iter_results(out))) == 2
    assert len(pd.read_csv(out / "leaderboard.csv")) == 2  # different configurations are never averaged


@register("explodes_on_task_1")
class ExplodesOnSecondTask(LinearProbe):
    """A strategy that fails mid-stream, to check that the suite records it and goes on."""

    Config = LinearConfig

    def train_task(self, task):
        if task.index == 1:
            raise RuntimeError("boom at task 1")
        super().train_task(task)


def test_failing_run_is_recorded_and_the_suite_goes_on(write_suite, tmp_path, capsys):
    out = tmp_path / "out"
    config = write_suite(strategies={"explodes_on_task_1": {"epochs": 1}, "linear": {"epochs": 1}})
    assert suite(config, out) == 1
    results = results_by_strategy(out)
    failed = results["explodes_on_task_1"]
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: boom at task 1"
    assert "train_task" in failed["traceback"]
    assert results["linear"]["status"] == "ok"
    assert list(pd.read_csv(out / "leaderboard.csv")["strategy"]) == ["linear"]
    capsys.readouterr()
    assert suite(config, out) == 1  # failed runs are retried, finished ones are not
    assert "0 runs done, 1 already finished, 1 failed, 0 diverged" in capsys.readouterr().out


def test_same_seed_same_numbers(write_suite, tmp_path):
    config = write_suite(strategies={"full_ft": {"epochs": 1}}, streams={"mini-domain-digits": {
        "domains": ["clean", "inverted"]}})
    suite(config, tmp_path / "a")
    suite(config, tmp_path / "b")
    (first,), (second,) = iter_results(tmp_path / "a"), iter_results(tmp_path / "b")
    assert first["accuracy_matrix"] == second["accuracy_matrix"]
    assert first["metrics"] == second["metrics"]
    assert first["scenario"] == "domain-incremental" and first["task_names"] == ["clean", "inverted"]


def test_single_task_stream_has_null_transfer(write_suite, tmp_path):
    out = tmp_path / "out"
    suite(write_suite(strategies={"linear": {"epochs": 1}}, streams={"mini-split-digits": {"n_tasks": 1}}), out)
    (result,) = iter_results(out)
    assert result["metrics"]["bwt"] is None and result["metrics"]["forgetting"] is None
    assert pd.read_csv(out / "leaderboard.csv")["bwt_mean"].isna().all()


def docs_strategy_example() -> str:
    text = (ROOT / "docs" / "extending.md").read_text()
    section = text.split("# Adding a strategy", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_documented_strategy_example_runs_through_the_suite(write_suite, tmp_path):
    exec(compile(docs_strategy_example(), "docs/extending.md", "exec"), {"__name__": "docs_example"})
    name = "nearest_mean"
    assert issubclass(STRATEGIES.get(name), Strategy)
    out = tmp_path / "out"
    assert suite(write_suite(strategies={name: {}}), out) == 0
    (result,) = iter_results(out)
    assert result["status"] == "ok" and result["strategy"] == name
    assert result["metrics"]["avg_acc"] > 10.0  # better than chance over 10 digits


def test_a_mistyped_or_broken_suite_file_is_told_before_torch_loads(tmp_path):
    """The suite file is read before torch and the strategies are imported (seconds), so a wrong path or a YAML
    syntax error answers at once; in a fresh interpreter, since this one has torch already."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("streams: [\n")
    script = ("import sys, run_suite\n"
              "code = run_suite.main(['--config', sys.argv[1], '--out', sys.argv[2]])\n"
              "print(code, 'torch' in sys.modules, 'strategies' in sys.modules)")
    for path, message in [(tmp_path / "missing.yaml", "not found"), (broken, "is not valid YAML at line 2")]:
        done = subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "out")], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.stdout.split() == ["2", "False", "False"], done.stderr
        assert message in done.stderr.strip().splitlines()[-1] and not (tmp_path / "out").exists()


def test_bad_input_exits_2_with_one_line_and_writes_nothing(write_suite, tmp_path):
    out = tmp_path / "out"
    process = subprocess.run([sys.executable, str(ROOT / "run_suite.py"), "--config", str(write_suite()),
                              "--out", str(out), "--strategies", "ewc"], capture_output=True, text=True, cwd=ROOT)
    assert process.returncode == 2
    builtin = builtin_strategies()
    assert process.stderr.strip().splitlines() == ["error: unknown strategy 'ewc'; valid: " + ", ".join(builtin)]
    assert not out.exists()


def test_missing_data_exits_2_before_training(write_suite, tmp_path, capsys, tiny_backbone_params):
    """Bad values of every other kind: tests/test_bad_input.py."""
    config = write_suite()
    text = config.read_text().replace(tiny_backbone_params["debian_dir"], "/nonexistent")
    config.write_text(text.replace(tiny_backbone_params["data_dir"], str(tmp_path / "empty")))
    out = tmp_path / "out"
    assert suite(config, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: Fashion-MNIST not found")
    assert not out.exists()


def test_default_config_plans_every_builtin_strategy_on_both_mini_streams():
    config = load_suite(ROOT / "configs" / "mini.yaml")
    specs = plan_runs(config, Runtime.resolve("cpu", config.precision, False, flags=frozenset()))  # no native bf16
    assert {entry_name(s.strategy) for s in specs} == set(builtin_strategies())
    assert {s.strategy for s in specs if s.strategy_params.get("joint")} == {"full_ft@joint", "linear@joint"}
    assert {s.stream for s in specs} == {"mini-split-digits", "mini-domain-digits"}
    assert len(specs) == 2 * len(config.strategies)
    assert {s.precision for s in specs} == {"fp32"} and all(torch.device(s.device).type == "cpu" for s in specs)


def test_reports_rebuilds_the_leaderboard_from_results_alone(write_suite, tmp_path, capsys):
    from reports.__main__ import main as reports_main

    out = tmp_path / "out"
    suite(write_suite(strategies={"linear": {"epochs": 1}}), out)
    original = (out / "leaderboard.csv").read_bytes()
    (out / "leaderboard.csv").unlink()
    assert reports_main([str(out)]) == 0
    assert (out / "leaderboard.csv").read_bytes() == original
    assert reports_main([str(tmp_path / "nowhere")]) == 2
    assert "holds no runs/ folder" in capsys.readouterr().err


@register("nan_on_task_1")
class NanOnSecondTask(LinearProbe):
    """A strategy whose loss turns NaN on its second task, to check that divergence is recorded, not crashed on."""

    Config = LinearConfig

    def train_task(self, task):
        if task.index != 1:
            return super().train_task(task)
        self.head.grow(task.num_outputs)
        fit(lambda x, y: self.predict(x).sum() * float("nan"), self.head.parameters(), task.train, self.config,
            self.runtime)


def test_diverging_run_is_recorded_with_where_and_the_suite_goes_on(write_suite, tmp_path, capsys):
    out = tmp_path / "out"
    config = write_suite(strategies={"nan_on_task_1": {"epochs": 2}, "linear": {"epochs": 1}})
    assert suite(config, out) == 0  # divergence is an outcome of the method, not a failure of the suite
    results = results_by_strategy(out)
    diverged = results["nan_on_task_1"]
    assert diverged["status"] == "diverged" and diverged["diverged_at"] == {"task": 1, "step": 0, "epoch": 0}
    assert diverged["error"] == "RunDiverged: non-finite loss at task 1, step 0 (epoch 0)"
    assert results["linear"]["status"] == "ok"
    assert list(pd.read_csv(out / "leaderboard.csv")["strategy"]) == ["linear"]
    assert "nan_on_task_1" in (out / "report.html").read_text()
    capsys.readouterr()
    suite(config, out)  # a diverged run is final: the same seed would diverge again
    assert "0 runs done, 2 already finished, 0 failed, 0 diverged" in capsys.readouterr().out


def test_a_busy_results_folder_is_refused(write_suite, tmp_path, capsys):
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another suite is writing here
        assert suite(write_suite(strategies={"linear": {"epochs": 1}}), out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: results folder {out} is in use by another suite; wait for it to finish or pass another --out"]
    assert not (out / "runs").exists()
