"""Published numbers as data: a suite's `published:` block is validated like the rest of the file, stored beside the
results, and the reports show it beside the measured numbers, with the difference, the source and a recipe check."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

import run_suite
from benchmark.config import parse_suite
from benchmark.errors import ConfigError
from benchmark.published import PUBLISHED_FILE
from reports.__main__ import main as reports_main

ENTRY = {"strategy": "linear", "stream": "mini-split-digits", "backbone": "vit-mini", "avg_acc": 50.0,
         "paper_metrics": {"avg_acc": "A_N"}, "split": "5 tasks x 2 digits", "seeds": "one run",
         "source": "Example et al. 2026, Table 3"}
SUITE = {"backbones": ["vit-mini"], "streams": ["mini-split-digits"], "strategies": ["linear", "full_ft"]}


@pytest.mark.parametrize("change, message", [
    ({"strategy": "lora"}, "published[0].strategy: must be one of this suite's strategy entries (full_ft, linear), "
                           "got 'lora'"),
    ({"avg_acc": None}, "published[0].values: must be at least one of avg_inc_acc"),
    ({"paper_metrics": {}}, "published[0].paper_metrics: must be a mapping giving the paper's name of each"),
    ({"recipe": {"colour": "blue"}}, "published[0].recipe: must be a mapping of input, precision"),
    ({"source": " "}, "published[0].source: must be a non-empty string"),
    ({"avg_acc": "high"}, "published[0].avg_acc: must be a number, got 'high'"),
    ({"units": "%"}, "published[0]: unknown key 'units'"),
])
def test_bad_published_entries_are_one_line_errors(change, message):
    with pytest.raises(ConfigError) as error:
        parse_suite({**SUITE, "published": [{**ENTRY, **change}]}, "paper")
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_one_published_number_per_row_and_a_list_of_entries():
    with pytest.raises(ConfigError, match=r"published\[1\]: must be the only entry for its"):
        parse_suite({**SUITE, "published": [ENTRY, {**ENTRY, "avg_acc": 51.0}]}, "paper")
    with pytest.raises(ConfigError, match="published: must be a list of entries, got dict"):
        parse_suite({**SUITE, "published": ENTRY}, "paper")


def test_the_report_shows_published_beside_measured(write_suite, tmp_path):
    """A small results folder written by a suite whose config states two published numbers: the leaderboard CSV has
    the published value, the difference and the source; the run whose recipe is the published one's says `same
    recipe`, the other names what differs; report.html shows the source text."""
    full_ft = {**ENTRY, "strategy": "full_ft", "avg_inc_acc": 40.0, "paper_metrics": {"avg_acc": "A_N",
               "avg_inc_acc": "A-bar"}, "source": "Other et al. 2025, logs/run.log:12",
               "recipe": {"precision": "bf16", "input": "backbone"}}
    linear = {**ENTRY, "recipe": {"precision": "fp32", "class_order": "seeded", "schedule": "cosine"}}
    config = write_suite({"full_ft": {"epochs": 1}, "linear": {"epochs": 1}}, streams={"mini-split-digits":
                                                                                        {"n_tasks": 2}})
    raw = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**raw, "published": [linear, full_ft]}))
    out = tmp_path / "out"
    assert run_suite.main(["--config", str(config), "--out", str(out), "--quiet"]) == 0
    stored = json.loads((out / PUBLISHED_FILE).read_text())["published"]
    assert [entry["strategy"] for entry in stored] == ["linear", "full_ft"]

    report = tmp_path / "report"
    assert reports_main([str(out), "--out", str(report)]) == 0
    table = pd.read_csv(report / "leaderboard.csv").set_index("strategy")
    assert table.loc["linear", "published_avg_acc"] == 50.0
    assert table.loc["linear", "diff_avg_acc"] == pytest.approx(table.loc["linear", "avg_acc_mean"] - 50.0, abs=1e-4)
    assert pd.isna(table.loc["linear", "published_avg_inc_acc"])
    assert table.loc["full_ft", "diff_avg_inc_acc"] == pytest.approx(table.loc["full_ft", "avg_inc_acc_mean"] - 40.0,
                                                                     abs=1e-4)
    assert table.loc["linear", "published_source"] == "Example et al. 2026, Table 3"
    assert table.loc["linear", "published_recipe"] == "same recipe"
    assert table.loc["full_ft", "published_recipe"] == "differs: precision fp32 (published bf16)"
    assert table.loc["full_ft", "paper_name_avg_inc_acc"] == "A-bar"
    assert "input=backbone" in table.loc["linear", "recipe"] and "precision=fp32" in table.loc["linear", "recipe"]
    page = (report / "report.html").read_text()
    assert "Published numbers" in page and "Other et al. 2025, logs/run.log:12" in page
    assert "published (Δ = ours - published)" in (report / "leaderboard.md").read_text()


def test_a_damaged_published_file_is_skipped_with_a_line(write_suite, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_suite.main(["--config", str(write_suite({"linear": {"epochs": 1}}, streams={"mini-split-digits":
                                                                                          {"n_tasks": 2}})),
                           "--out", str(out), "--quiet"]) == 0
    (out / PUBLISHED_FILE).write_text("{not json")
    capsys.readouterr()
    assert reports_main([str(out)]) == 0
    assert f"skipped {out / PUBLISHED_FILE}:" in capsys.readouterr().err
    assert "published_source" not in pd.read_csv(out / "leaderboard.csv").columns
