"""Seeds split into the class order's and the training's: config, run identity, what the runs use and record, and
the leaderboard pairing runs that share a class order."""

import pandas as pd
import pytest
import yaml

from benchmark.config import load_suite
from benchmark.errors import ConfigError
from benchmark.results import RunSpec, iter_results
from benchmark.runtime import Runtime
from benchmark.suite import plan_runs
from test_suite import suite

CPU = Runtime.resolve("cpu", "fp32", progress=False)


def _suite(tmp_path, **extra):
    path = tmp_path / "seeds.yaml"
    path.write_text(yaml.safe_dump({"backbones": ["vit-mini"], "streams": ["mini-split-digits"],
                                    "strategies": ["linear"], "seeds": [1, 2], **extra}))
    return load_suite(path)


def test_split_seeds_enter_the_run_identity(tmp_path):
    plain = plan_runs(_suite(tmp_path), CPU)
    fixed_order = plan_runs(_suite(tmp_path, class_order_seed=0), CPU)
    fixed_training = plan_runs(_suite(tmp_path, train_seed=0), CPU)
    assert [(s.order_seed, s.training_seed) for s in plain] == [(1, 1), (2, 2)]
    assert [(s.order_seed, s.training_seed) for s in fixed_order] == [(0, 1), (0, 2)]
    assert [(s.order_seed, s.training_seed) for s in fixed_training] == [(1, 0), (2, 0)]
    ids = [s.run_id for specs in (plain, fixed_order, fixed_training) for s in specs]
    assert len(set(ids)) == 6
    assert "class_order_seed" not in plain[0].as_dict()  # unset: ids of runs from before the split are unchanged
    assert RunSpec(**fixed_order[0].as_dict()) == fixed_order[0]


@pytest.mark.parametrize("extra, message", [
    ({"class_order_seed": 0, "train_seed": 1}, "class_order_seed / train_seed: must be set one at most"),
    ({"class_order_seed": "zero"}, "class_order_seed: must be an integer"),
    ({"comparison": {"level": 1.5}}, "comparison.level: must be between 0 and 1"),
    ({"comparison": {"refrence": "lora"}}, "comparison: unknown key 'refrence'"),
])
def test_bad_seed_and_comparison_settings_are_one_line_errors(tmp_path, extra, message):
    with pytest.raises(ConfigError) as error:
        _suite(tmp_path, **extra)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_fixed_class_order_varies_only_training_and_pairs_in_the_leaderboard(write_suite, tmp_path):
    out = tmp_path / "out"
    config = write_suite(strategies={"linear": {"epochs": 1}, "linear@fast": {"epochs": 1, "lr": 0.05}}, seeds=[5, 6],
                         class_order_seed=3)
    assert suite(config, out) == 0
    results = list(iter_results(out))
    assert len(results) == 4 and {tuple(r["class_order"]) for r in results} == {tuple(results[0]["class_order"])}
    assert {(r["seed"], r["class_order_seed"], r["train_seed"]) for r in results} == {(5, 3, 5), (6, 3, 6)}
    linear = {r["seed"]: r["accuracy_matrix"] for r in results if r["strategy"] == "linear"}
    assert linear[5] != linear[6]  # the training seed moves the numbers
    board = pd.read_csv(out / "leaderboard.csv")
    assert (board["n_pairs"] == 2).all() and (board["n_seeds"] == 2).all()
    assert board["avg_acc_ci_low"].notna().all() and (board["avg_acc_ci_low"] <= board["avg_acc_mean"]).all()
