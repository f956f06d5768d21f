"""benchmarks/throughput.py's image-pipeline and ViT-B/16 modes run end to end on tiny settings (no timing is
asserted: the numbers belong in docs/performance.md), so that they cannot rot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmark.sharing import MEMO  # noqa: E402
from benchmarks import throughput, vitb_job  # noqa: E402


def last_json(capsys: pytest.CaptureFixture) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_pipeline_mode_times_both_pipelines_on_the_same_files(capsys):
    assert throughput.main(["--pipeline", "--images", "20", "--repeats", "1", "--json"]) == 0
    report = last_json(capsys)
    assert report["images"] == {"train": 20, "test": 20} and report["cores"] == 1
    assert set(report["images_per_s"]) == {"suite train", "suite test", "bare train", "bare test"}
    assert all(rate > 0 for rate in report["images_per_s"].values())
    assert set(report["suite_over_bare"]) == {"train", "test"}


def test_vitb_mode_runs_every_family_through_the_suite_and_the_bare_loop(capsys, monkeypatch):
    """timm's 0.4 M-parameter test ViT in place of ViT-B/16, one task: each family's suite run and bare loop fill a
    1 x 1 accuracy matrix over the same 50 test images; the bare loop takes nothing from the suite's memo (L2P's
    borrowed network included) and puts nothing in it."""
    bare_job, memo_after_bare = vitb_job.bare_job, []

    def bare_job_then_memo(*args: object) -> dict:
        history = bare_job(*args)
        memo_after_bare.append((MEMO.hits, MEMO.misses))
        return history

    monkeypatch.setattr(vitb_job, "bare_job", bare_job_then_memo)
    threads = torch.get_num_threads()
    try:
        assert throughput.main(["--scale", "vitb", "--vit", "test_vit.r160_in1k", "--tasks", "1", "--batch-size",
                                "25", "--repeats", "1", "--precision", "fp32", "--threads", "1", "--json"]) == 0
    finally:
        torch.set_num_threads(threads)
    report = last_json(capsys)
    assert report["strategies"] == {family: strategy for family, (strategy, _) in vitb_job.FAMILIES.items()}
    for family, jobs in report["accuracy_matrices"].items():
        assert set(jobs) == {"suite", "bare"}
        assert all(len(matrix) == 1 and len(matrix[0]) == 1 and 0 <= matrix[0][0] <= 100
                   for matrix in jobs.values()), family
    assert set(report["bare_over_suite"]) == set(vitb_job.FAMILIES)
    assert memo_after_bare == [(0, 0)] * len(vitb_job.FAMILIES)


def test_vitb_mode_refuses_an_unknown_family():
    with pytest.raises(SystemExit, match="--families: unknown 'adapters'"):
        throughput.main(["--scale", "vitb", "--families", "adapters"])
