from pathlib import Path

import pytest

import run_suite
from benchmark import dryrun
from benchmark.config import load_suite
from benchmark.dryrun import DOWNLOADS, PRESENT, UNCHECKED, dry_run
from benchmark.runtime import Runtime
from strategies.base import build_strategy

ROOT = Path(__file__).resolve().parents[1]
CPU = Runtime.resolve("cpu", "fp32", progress=False)
# The forgetting study's trainable parameters with a 100-class head (issue #3's table), and ViT-B/16's head size.
STUDY = {"full_ft": 85_875_556, "linear": 76_900, "topk": 21_342_052, "lora@r4": 224_356, "lora@r8": 371_812,
         "lora@r16": 666_724, "block_expansion@p1": 7_164_772, "block_expansion@p2": 14_252_644,
         "block_expansion@p3": 21_340_516, "block_expansion@p4": 28_428_388}
VIT_B_HEAD_100 = 769 * 100
SIZED: dict = {}  # sizes shared by the shipped configs' dry runs: a strategy on a backbone is counted once
BUILT: dict = {}  # and their random-weight backbones, built once


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_passes_the_dry_run(path):
    """Weights and data are not on this machine: sized on random weights, data unchecked (tests only)."""
    runs = dry_run(load_suite(path), CPU, check_data=False, sized=SIZED, built=BUILT)
    assert runs and all(run.data == UNCHECKED and run.flops_per_image > 0 for run in runs)
    assert all(run.params_total >= run.params_trainable for run in runs)


def test_the_study_config_plans_the_studys_parameter_counts():
    runs = dry_run(load_suite(ROOT / "configs" / "bafghi2024_cifar100.yaml"), CPU, check_data=False, sized=SIZED,
                   built=BUILT)
    assert {run.spec.strategy: run.params_trainable + VIT_B_HEAD_100 for run in runs} == STUDY
    flops = {run.spec.strategy: run.flops_per_image for run in runs}
    assert flops["lora@r8"] == flops["full_ft"]  # merged adapters cost nothing at inference
    backbone_flops = flops["full_ft"]
    assert flops["block_expansion@p2"] == pytest.approx(backbone_flops * (1 + 2 / 12), rel=0.01)


def test_a_strategy_is_sized_once_whatever_the_streams_and_seeds(write_suite, monkeypatch):
    built = []
    monkeypatch.setattr(dryrun, "build_strategy", lambda name, *args: built.append(name) or build_strategy(name, *args))
    config = write_suite(strategies={"linear": {"epochs": 1}, "lora@r2": {"rank": 2}}, seeds=[1, 2],
                         streams={"mini-split-digits": {"n_tasks": 5}, "mini-domain-digits": {}})
    runs = dry_run(load_suite(config), CPU)
    assert len(runs) == 8 and sorted(built) == ["linear", "lora@r2"]
    sizes = {(run.spec.strategy, run.params_trainable, run.params_total, run.flops_per_image, run.head_params)
             for run in runs}
    assert len(sizes) == 2 and all(head == (32 + 1) * 10 for *_, head in sizes)


def test_dry_run_prints_the_plan_and_trains_nothing(write_suite, tmp_path, capsys):
    config = write_suite(strategies={"full_ft": {"epochs": 1}, "lora@r2": {"rank": 2}})
    out = tmp_path / "out"
    assert run_suite.main(["--config", str(config), "--out", str(out), "--quiet", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "lora@r2" in printed and "2 runs planned" in printed and PRESENT in printed
    assert not out.exists()


def test_missing_data_is_reported_as_a_download_or_as_the_runs_error(write_suite, tmp_path, capsys):
    empty = str(tmp_path / "no-data")
    may_download = write_suite(streams={"split-cifar100": {"data_dir": empty, "download": True, "n_tasks": 2}})
    runs = dry_run(load_suite(may_download), CPU)
    assert {run.data for run in runs} == {DOWNLOADS}  # and nothing was downloaded
    assert not (tmp_path / "no-data" / "cifar-100-python").exists()
    may_not = write_suite(streams={"split-cifar100": {"data_dir": empty, "n_tasks": 2}})
    assert run_suite.main(["--config", str(may_not), "--dry-run", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CIFAR-100 not found" in err[0]
