"""`precision: auto` is bf16 only where the device computes it natively: on a CPU, where /proc/cpuinfo lists
AVX512-BF16, AMX-BF16 or Arm's BF16 (elsewhere PyTorch emulates bf16 products ~15x slower than fp32). The CPU's
flags are injected, so both answers are tested on any machine."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmark.config import parse_suite
from benchmark.results import iter_results
from benchmark.runtime import Runtime, cpu_flags
from benchmark.suite import plan_runs, run_suite

NATIVE = frozenset({"fpu", "avx2", "avx512f", "avx512_bf16"})
EMULATED = frozenset({"fpu", "avx2", "fma"})  # e.g. an AMD EPYC without AVX-512


@pytest.mark.parametrize("flags, expected, why", [
    (NATIVE, "bf16", "natively (avx512_bf16)"),
    (frozenset({"amx_bf16", "amx_tile"}), "bf16", "natively (amx_bf16)"),
    (frozenset({"fp", "asimd", "bf16"}), "bf16", "natively (bf16)"),  # Arm's Features line
    (EMULATED, "fp32", "no native bf16"),
    (frozenset(), "fp32", "no native bf16"),  # no /proc/cpuinfo: the safe choice
])
def test_auto_precision_on_a_cpu_follows_its_bf16_support(flags, expected, why):
    runtime = Runtime.resolve("cpu", "auto", progress=False, flags=flags)
    assert runtime.precision == expected and why in runtime.precision_reason
    assert (runtime.amp_dtype is torch.bfloat16) == (expected == "bf16")


def test_an_explicit_precision_is_kept_whatever_the_cpu():
    assert Runtime.resolve("cpu", "bf16", progress=False, flags=EMULATED).precision == "bf16"
    assert Runtime.resolve("cpu", "fp32", progress=False, flags=NATIVE).precision == "fp32"


def test_cpu_flags_are_read_from_linux_cpuinfo(tmp_path: Path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\nCPU implementer\t: 0x41\n")
    assert cpu_flags(x86) == {"fpu", "avx2", "avx512_bf16"} and cpu_flags(arm) == {"fp", "asimd", "bf16", "i8mm"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_the_resolved_precision_is_in_the_run_id_and_the_result(tiny_backbone_params, tmp_path):
    config = parse_suite({"backbones": {"vit-mini": tiny_backbone_params}, "streams": {"mini-split-digits":
                          {"n_tasks": 2}}, "strategies": {"linear": {"epochs": 1}}, "retention": {"eval_size": 50},
                          "device": "cpu", "precision": "auto"}, "auto")
    native = Runtime.resolve("cpu", "auto", progress=False, flags=NATIVE)
    emulated = Runtime.resolve("cpu", "auto", progress=False, flags=EMULATED)
    [on_native], [on_emulated] = plan_runs(config, native), plan_runs(config, emulated)
    assert (on_native.precision, on_emulated.precision) == ("bf16", "fp32")
    assert on_native.run_id != on_emulated.run_id  # a resume never mixes the two
    run_suite(config, tmp_path, emulated, notify=lambda line: None)
    [result] = iter_results(tmp_path)
    assert result["run_id"] == on_emulated.run_id and result["config"]["precision"] == "fp32"
    assert result["runtime"]["precision"] == "fp32" and "no native bf16" in result["runtime"]["precision_reason"]
    assert "native bf16: none" in result["runtime"]["cpu_capability"]
