"""Every kind of bad input stops the command before anything is written: exit code 2, exactly one line on stderr
naming the problem and the fix, no traceback, no file created or changed (not even the results folder or its lock).

One table of cases: config values (types, ranges, seeds numpy rejects, sizes larger than the data), config files
(missing, a folder, not UTF-8, not YAML, not a mapping, a key twice), files and folders a config names (weights
missing, empty, truncated, not safetensors, of another architecture; data folders of the wrong layout), and command
lines of `run_suite.py` and `python -m reports`. Each case runs the command's `main` in this process (it is what the
console script runs; an exception escaping it fails the test). Most fail in validation, before any data loads.
(A missing data set: tests/test_suite.py::test_missing_data_exits_2_before_training; damaged results folders:
tests/test_damaged_results.py.)"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest
import torch
import yaml
from safetensors.torch import save_file

from reports.__main__ import main as reports_main
from test_suite import suite

MISSING = object()  # an edit that removes the key


@dataclass(frozen=True)
class Case:
    name: str
    message: str  # part of the one error line
    edit: Optional[tuple[str, Any]] = None  # set `a.b.c` of the base suite to a value ("{tmp}" = the test's folder)
    text: Optional[bytes] = None  # the config file's whole content instead of the base suite
    args: tuple[str, ...] = ()  # extra command-line arguments ("{tmp}" as above)
    command: str = "run_suite"  # or "reports": `python -m reports ...args`
    config_path: Optional[str] = None  # --config names this path ("{tmp}" as above) instead of the written file


CKPT = "backbones.vit-mini.checkpoint"
DATA = "backbones.vit-mini.data_dir"
CASES = [
    # configuration values
    Case("unknown top-level key", "unknown key 'seedz'", edit=("seedz", [1])),
    Case("unknown hyper-parameter", "strategies.linear: unknown key 'lrr'", edit=("strategies.linear.lrr", 0.1)),
    Case("wrong type", "strategies.linear.epochs: must be an integer", edit=("strategies.linear.epochs", "three")),
    Case("bool as a string", "backbones.vit-mini.download: must be true or false",
         edit=("backbones.vit-mini.download", "no")),
    Case("negative lr", "strategies.linear.lr: must be > 0, got -1.0", edit=("strategies.linear.lr", -1)),
    Case("infinite lr", "strategies.linear.lr: must be a finite number, got inf",
         edit=("strategies.linear.lr", float("inf"))),
    Case("nan weight decay", "strategies.linear.weight_decay: must be a finite number, got nan",
         edit=("strategies.linear.weight_decay", float("nan"))),
    Case("zero epochs", "strategies.linear.epochs: must be >= 1, got 0", edit=("strategies.linear.epochs", 0)),
    Case("zero batch", "strategies.linear.batch_size: must be >= 1", edit=("strategies.linear.batch_size", 0)),
    Case("unknown choice", "strategies.linear.optimizer: must be one of sgd, adamw",
         edit=("strategies.linear.optimizer", "lion")),
    Case("momentum 1", "strategies.linear.momentum: must be in [0, 1)", edit=("strategies.linear.momentum", 1)),
    Case("unknown strategy", "unknown strategy 'ewc'; valid:", edit=("strategies.ewc", {})),
    Case("unknown stream", "unknown stream 'split-mnist'; valid:", edit=("streams.split-mnist", {})),
    Case("unknown backbone", "unknown backbone 'vit-huge'; valid: clip-vit-b16, vit-mini",
         edit=("backbones.vit-huge", {})),
    Case("variant label with a slash", "strategy 'linear@a/b': the label after '@' must be letters",
         edit=("strategies.linear@a/b", {})),
    Case("empty variant label", "strategy 'linear@': the label after '@' must be letters",
         edit=("strategies.linear@", {})),
    Case("stream out of range", "streams.mini-split-digits.test_fraction: must be in [0.05, 0.5]",
         edit=("streams.mini-split-digits.test_fraction", 0.9)),
    Case("n_tasks not a divisor", "streams.mini-split-digits.n_tasks: must be a divisor of the 10 classes",
         edit=("streams.mini-split-digits.n_tasks", 3)),
    Case("negative split seed", "streams.mini-split-digits.split_seed: must be an integer in [0, 2**32 - 1",
         edit=("streams.mini-split-digits.split_seed", -1)),
    Case("repeated domain", "streams.mini-domain-digits.domains: must be distinct names",
         edit=("streams", {"mini-domain-digits": {"domains": ["clean", "clean"]}})),
    Case("negative seed", "seeds: must be an integer in [0, 2**32 - 1 = 4294967295], got -1", edit=("seeds", [-1])),
    Case("seed too large for numpy", "seeds: must be an integer in [0, 2**32 - 1", edit=("seeds", [2**32])),
    Case("seeds not a list", "seeds: must be a list, got 3", edit=("seeds", 3)),
    Case("duplicate seeds", "seeds: must be a non-empty list of distinct integers", edit=("seeds", [1, 1])),
    Case("bad device", "device: must be one of auto, cpu, cuda", edit=("device", "tpu")),
    Case("bad precision", "precision: must be one of auto, fp32, bf16", edit=("precision", "fp8")),
    Case("negative loader workers", "loader_workers: must be >= 0", edit=("loader_workers", -1)),
    Case("zero workers in the file", "executor.workers: must be >= 1", edit=("executor", {"workers": 0})),
    Case("ray with no CPUs", "executor.ray_num_cpus: must be >= 1 or null", edit=("executor", {"ray_num_cpus": 0})),
    Case("unknown submitit cluster", "executor.submitit_cluster: must be null (auto), slurm, local, debug",
         edit=("executor", {"submitit_cluster": "pbs"})),
    Case("retention size", "retention.eval_size: must be >= 1", edit=("retention.eval_size", 0)),
    Case("negative subset seed", "retention.subset_seed: must be an integer in [0, 2**32 - 1",
         edit=("retention.subset_seed", -5)),
    Case("more retention images than the test set", "retention.eval_size: must be at most the 200 images of "
         "fashion-mnist-test, got 201", edit=("retention.eval_size", 201)),
    Case("memory bank larger than the train set", "retention.protocols.knn.bank_size: must be at most the 400 "
         "images of fashion-mnist-train, got 401", edit=("retention.protocols", {"knn": {"bank_size": 401}})),
    Case("unknown protocol", "unknown retention protocol 'nope'; valid: head, knn, zeroshot",
         edit=("retention.protocols", ["head", "nope"])),
    Case("bad protocol param", "retention.protocols.knn.k: must be >= 1",
         edit=("retention.protocols", {"knn": {"k": 0}})),
    Case("old protocol key", "retention: unknown key 'protocol'; valid keys: protocols",
         edit=("retention.protocol", "head")),
    Case("empty grid axis", "strategies: must be a non-empty mapping", edit=("strategies", {})),
    Case("params not a mapping", "strategies.linear: must be a mapping", edit=("strategies.linear", 3)),
    Case("expansion not fitting the backbone", "strategies.block_expansion.p: must be a divisor of the backbone's "
         "depth (2 blocks), got 3", edit=("strategies.block_expansion", {"p": 3})),
    Case("top-k deeper than the backbone", "strategies.topk.k: must be at most the backbone's depth (2 blocks), got 5",
         edit=("strategies.topk", {"k": 5})),
    Case("unknown LoRA target", "strategies.lora.targets: must be distinct names from q, k, v, proj, fc1, fc2",
         edit=("strategies.lora", {"targets": ["q", "query"]})),
    # files and folders the config names
    Case("missing checkpoint", f"{CKPT}: must be an existing file", edit=(CKPT, "/nonexistent/vit.safetensors")),
    Case("empty checkpoint", f"{CKPT}: cannot load", edit=(CKPT, "{tmp}/weights/empty.safetensors")),
    Case("truncated checkpoint", f"{CKPT}: cannot load", edit=(CKPT, "{tmp}/weights/truncated.safetensors")),
    Case("checkpoint not safetensors", f"{CKPT}: cannot load", edit=(CKPT, "{tmp}/weights/pickled.safetensors")),
    Case("checkpoint of another architecture", "Missing key(s) in state_dict",
         edit=(CKPT, "{tmp}/weights/other.safetensors")),
    Case("checkpoint without its card", "nocard.json", edit=(CKPT, "{tmp}/weights/nocard.safetensors")),
    Case("data folder is a file", f"{DATA}: must be a folder (or a path to create one at), not a file",
         edit=(DATA, "{tmp}/plain-file")),
    Case("data folder inside a file", f"{DATA}: must be a path to create a folder at, but",
         edit=(DATA, "{tmp}/plain-file/data")),
    Case("domain folders without domains", "no domain folders in",
         edit=("streams", {"domain-folders": {"root": "{tmp}/empty-folder"}})),
    Case("domain folders holding images directly", "images directly in",
         edit=("streams", {"domain-folders": {"root": "{tmp}/flat"}})),
    Case("CIFAR-100 not in its folder", "CIFAR-100 not found: no folder",
         edit=("streams", {"split-cifar100": {"data_dir": "{tmp}/empty-folder"}})),
    # config files
    Case("config not found", "config file '{tmp}/absent.yaml' not found; pass an existing YAML file with --config",
         config_path="{tmp}/absent.yaml"),
    Case("config is a folder", "is a folder; pass a YAML file with --config", config_path="{tmp}/empty-folder"),
    Case("config is binary", "is not UTF-8 text (byte 1); pass a YAML text file", text=b"\x00\xff\xfe\x01binary"),
    Case("config in Latin-1", "is not UTF-8 text", text="strategies: {linear: {}}  # caf\xe9\n".encode("latin-1")),
    Case("config not YAML", "is not valid YAML at line 2", text=b"strategies: {linear: [\n"),
    Case("config empty", "the file must hold a mapping with keys backbones", text=b""),
    Case("config a list", "the file must hold a mapping with keys backbones", text=b"- linear\n- full_ft\n"),
    Case("config a key twice", "key 'linear' appears twice",
         text=b"strategies:\n  linear: {epochs: 1}\n  linear: {epochs: 2}\n"),
    # run_suite.py's command line
    Case("--seeds negative", "--seeds: must be an integer in [0, 2**32 - 1", args=("--seeds", "-1")),
    Case("--seeds too large", "--seeds: must be an integer in [0, 2**32 - 1", args=("--seeds", str(2**40))),
    Case("--seeds not a number", "argument --seeds: invalid int value: 'abc'; see run_suite.py --help",
         args=("--seeds", "abc")),
    Case("--seeds repeated", "--seeds: must be a non-empty list of distinct integers", args=("--seeds", "1", "1")),
    Case("--workers 0", "executor.workers: must be >= 1, got 0", args=("--workers", "0")),
    Case("--workers negative", "executor.workers: must be >= 1, got -2", args=("--workers", "-2")),
    Case("unknown flag", "unrecognized arguments: --sed", args=("--sed", "1")),
    Case("--out is a file", "--out: must be a folder (or a path to create one at), not a file",
         args=("--out", "{tmp}/plain-file")),
    Case("--out inside a file", "--out: must be a path to create a folder at, but",
         args=("--out", "{tmp}/plain-file/x")),
    Case("--strategies unknown", "unknown strategy 'ewc'", args=("--strategies", "ewc")),
    Case("--executor unknown", "unknown executor 'dask'; valid: local, ray, submitit", args=("--executor", "dask")),
    # python -m reports ({tmp}/results holds an empty runs/)
    Case("reports: no runs/ folder", "{tmp}/empty-folder holds no runs/ folder; pass the --out folder of run_suite.py",
         args=("{tmp}/results", "{tmp}/empty-folder"), command="reports"),
    Case("reports: --out is a file", "--out: must be a folder", args=("{tmp}/results", "--out", "{tmp}/plain-file"),
         command="reports"),
    Case("reports: no folder given", "the following arguments are required: results_dirs", command="reports"),
    Case("reports: unknown flag", "unrecognized arguments: --html; see python -m reports --help",
         args=("{tmp}/results", "--html"), command="reports"),
]


def edit(base: dict, path: str, value: Any) -> dict:
    """Set `a.b.c` in a nested copy of `base` (MISSING removes the key)."""
    config = yaml.safe_load(yaml.safe_dump(base))
    *parents, last = path.split(".")
    node = config
    for key in parents:
        node = node[key]
    if value is MISSING:
        node.pop(last)
    else:
        node[last] = value
    return config


def filled(value: Any, tmp: Path) -> Any:
    """`value` with "{tmp}" replaced by the test's folder, in strings nested anywhere."""
    if isinstance(value, str):
        return value.replace("{tmp}", str(tmp))
    if isinstance(value, dict):
        return {filled(k, tmp): filled(v, tmp) for k, v in value.items()}
    if isinstance(value, list):
        return [filled(v, tmp) for v in value]
    return value


def bad_files(folder: Path, checkpoint: Path) -> None:
    """The broken files and folders the cases name: weights, a plain file, an empty folder, a flat image folder."""
    weights = folder / "weights"
    weights.mkdir()
    card = checkpoint.with_suffix(".json")
    (weights / "empty.safetensors").write_bytes(b"")
    (weights / "truncated.safetensors").write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    torch.save({"weight": torch.zeros(2)}, weights / "pickled.safetensors")
    save_file({"weight": torch.zeros(2)}, str(weights / "other.safetensors"))
    for name in ("empty", "truncated", "pickled", "other"):
        shutil.copy(card, weights / f"{name}.json")
    shutil.copy(checkpoint, weights / "nocard.safetensors")
    (folder / "plain-file").write_text("not a folder\n")
    (folder / "empty-folder").mkdir()
    (folder / "flat").mkdir()
    (folder / "flat" / "image.png").write_bytes(b"\x89PNG")
    (folder / "results" / "runs").mkdir(parents=True)


def files_under(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_case(case: Case, config_path: Path, tmp: Path) -> int:
    args = [filled(a, tmp) for a in case.args]
    if case.command == "reports":
        return reports_main(args)
    if case.config_path is not None:
        config_path = Path(filled(case.config_path, tmp))
    return suite(config_path, tmp / "out", *args)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(case, write_suite, tiny_backbone_params, tmp_path, capsys):
    config_path = write_suite(strategies={"linear": {"epochs": 1}})
    if case.edit is not None:
        key, value = case.edit
        config_path.write_text(yaml.safe_dump(edit(yaml.safe_load(config_path.read_text()), key,
                                                   filled(value, tmp_path))))
    if case.text is not None:
        config_path.write_bytes(case.text)
    bad_files(tmp_path, Path(tiny_backbone_params["checkpoint"]))
    before = files_under(tmp_path)
    capsys.readouterr()

    assert run_case(case, config_path, tmp_path) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and filled(case.message, tmp_path) in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "out").exists()
    assert files_under(tmp_path) == before  # nothing written, nothing changed
