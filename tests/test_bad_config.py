"""Every kind of bad configuration stops the suite before any training: exit code 2, one line naming the key and
what is allowed, nothing written. (A missing data set: tests/test_suite.py::test_missing_data_exits_2_before_training.)"""

import pytest
import yaml

from test_suite import suite


def edit(base: dict, path: str, value) -> dict:
    """Set `a.b.c` in a nested copy of `base` (value None removes the key)."""
    config = yaml.safe_load(yaml.safe_dump(base))
    *parents, last = path.split(".")
    node = config
    for key in parents:
        node = node[key]
    if value is None:
        node.pop(last)
    else:
        node[last] = value
    return config


CASES = [
    ("unknown top-level key", "seedz", [1], "unknown key 'seedz'"),
    ("unknown hyper-parameter", "strategies.linear.lrr", 0.1, "strategies.linear: unknown key 'lrr'"),
    ("wrong type", "strategies.linear.epochs", "three", "strategies.linear.epochs: must be an integer"),
    ("negative lr", "strategies.linear.lr", -1, "strategies.linear.lr: must be > 0, got -1.0"),
    ("zero epochs", "strategies.linear.epochs", 0, "strategies.linear.epochs: must be >= 1, got 0"),
    ("zero batch", "strategies.linear.batch_size", 0, "strategies.linear.batch_size: must be >= 1"),
    ("unknown choice", "strategies.linear.optimizer", "lion", "strategies.linear.optimizer: must be one of sgd, adamw"),
    ("unknown strategy", "strategies.ewc", {}, "unknown strategy 'ewc'; valid:"),
    ("unknown stream", "streams.split-mnist", {}, "unknown stream 'split-mnist'; valid:"),
    ("unknown backbone", "backbones.vit-huge", {}, "unknown backbone 'vit-huge'; valid: clip-vit-b16, vit-mini"),
    ("stream out of range", "streams.mini-split-digits.test_fraction", 0.9,
     "streams.mini-split-digits.test_fraction: must be in [0.05, 0.5]"),
    ("n_tasks not a divisor", "streams.mini-split-digits.n_tasks", 3,
     "streams.mini-split-digits.n_tasks: must be a divisor of the 10 classes"),
    ("duplicate seeds", "seeds", [1, 1], "seeds: must be a non-empty list of distinct integers"),
    ("bad device", "device", "tpu", "device: must be one of auto, cpu, cuda"),
    ("bad precision", "precision", "fp8", "precision: must be one of auto, fp32, bf16"),
    ("negative loader workers", "loader_workers", -1, "loader_workers: must be >= 0"),
    ("retention size", "retention.eval_size", 0, "retention.eval_size: must be >= 1"),
    ("unknown protocol", "retention.protocols", ["head", "nope"], "unknown retention protocol 'nope'; valid: head, knn, zeroshot"),
    ("bad protocol param", "retention.protocols", {"knn": {"k": 0}}, "retention.protocols.knn.k: must be >= 1"),
    ("old protocol key", "retention.protocol", "head", "retention: unknown key 'protocol'; valid keys: protocols"),
    ("missing checkpoint", "backbones.vit-mini.checkpoint", "/nonexistent/vit.safetensors",
     "backbones.vit-mini.checkpoint: must be an existing file"),
    ("empty grid axis", "strategies", {}, "strategies: must be a non-empty mapping"),
    ("params not a mapping", "strategies.linear", 3, "strategies.linear: must be a mapping"),
    ("expansion not fitting the backbone", "strategies.block_expansion", {"p": 3},
     "strategies.block_expansion.p: must be a divisor of the backbone's depth (2 blocks), got 3"),
    ("top-k deeper than the backbone", "strategies.topk", {"k": 5},
     "strategies.topk.k: must be at most the backbone's depth (2 blocks), got 5"),
    ("unknown LoRA target", "strategies.lora", {"targets": ["q", "query"]},
     "strategies.lora.targets: must be distinct names from q, k, v, proj, fc1, fc2"),
]


@pytest.mark.parametrize("what, path, value, message", CASES, ids=[c[0] for c in CASES])
def test_bad_config_is_one_line_exit_2_nothing_written(write_suite, tmp_path, capsys, what, path, value, message):
    config_path = write_suite(strategies={"linear": {"epochs": 1}})
    config_path.write_text(yaml.safe_dump(edit(yaml.safe_load(config_path.read_text()), path, value)))
    out = tmp_path / "out"
    assert suite(config_path, out) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not out.exists()


def test_malformed_yaml(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("strategies: {linear: [\n")
    assert suite(path, tmp_path / "out") == 2
    assert "is not valid YAML at line" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
