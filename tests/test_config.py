import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from benchmark.config import load_suite, make_config, require, select
from benchmark.errors import ConfigError
from strategies.base import strategy_config


def test_yaml_float_written_as_exponent_is_read_as_number():
    config = strategy_config("full_ft", {"lr": "1e-4", "epochs": 2})
    assert config.lr == pytest.approx(1e-4) and config.epochs == 2


@pytest.mark.parametrize("params, message", [
    ({"lrr": 0.1}, "strategies.full_ft: unknown key 'lrr'; valid keys: input, precision, epochs, batch_size, lr"),
    ({"lr": -1.0}, "strategies.full_ft.lr: must be > 0, got -1.0"),
    ({"epochs": 0}, "strategies.full_ft.epochs: must be >= 1, got 0"),
    ({"epochs": 1.5}, "strategies.full_ft.epochs: must be an integer, got 1.5"),
    ({"lr": "fast"}, "strategies.full_ft.lr: must be a number, got 'fast'"),
    ({"optimizer": "lion"}, "strategies.full_ft.optimizer: must be one of sgd, adamw, got 'lion'"),
])
def test_bad_hyper_parameter_names_key_and_range(params, message):
    with pytest.raises(ConfigError) as error:
        strategy_config("full_ft", params)
    assert str(error.value).startswith(message)


def test_make_config_validates_nested_tuple_types():
    @dataclass(frozen=True)
    class Params:
        names: tuple[str, ...] = ("a",)

        def __post_init__(self):
            require(len(self.names) > 0, "names", "non-empty", self.names)

    assert make_config(Params, {"names": ["x", "y"]}, "p").names == ("x", "y")
    with pytest.raises(ConfigError, match=r"p.names\[1\]: must be a string, got 3"):
        make_config(Params, {"names": ["x", 3]}, "p")
    with pytest.raises(ConfigError, match="p.names: must be non-empty"):
        make_config(Params, {"names": []}, "p")


def _write(tmp_path, text):
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def test_suite_file_errors_are_one_line_and_name_the_problem(tmp_path):
    cases = {
        "backbones: [vit-mini]\nstreams: [mini-split-digits]\nstrategies: [linear]\nseedz: [1]\n": "unknown key 'seedz'",
        "backbones: [vit-mini]\nstreams: [mini-split-digits]\n": "strategies: must be a non-empty mapping",
        "backbones: [vit-mini\n": "is not valid YAML at line",
        "backbones: [vit-mini]\nstreams: [s]\nstrategies: [linear]\ndevice: tpu\n": "device: must be one of auto",
        "backbones: [vit-mini]\nstreams: [s]\nstrategies: [linear]\nseeds: [1, 1]\n": "seeds: must be a non-empty",
        "backbones: [vit-mini]\nstreams: [s]\nstrategies: [linear]\nretention: {eval_size: 0}\n":
            "retention.eval_size: must be >= 1",
        "- just\n- a list\n": "the file must hold a mapping",
        "backbones: [vit-mini]\nstreams: [s]\nstrategies: [linear]\nretention: 5\n":
            "retention: must be a mapping of hyper-parameters, got 5",
        "backbones: [vit-mini]\nstreams: {s: 3}\nstrategies: [linear]\n": "streams.s: must be a mapping",
    }
    for text, expected in cases.items():
        with pytest.raises(ConfigError) as error:
            load_suite(_write(tmp_path, text))
        assert expected in str(error.value) and "\n" not in str(error.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_suite(tmp_path / "nope.yaml")


def test_select_keeps_configured_params_and_adds_defaults(tmp_path):
    suite = load_suite(_write(tmp_path, "backbones: [vit-mini]\nstreams: [mini-split-digits]\n"
                                       "strategies: {full_ft: {epochs: 2}}\n"))
    chosen = select(suite, strategies=["linear", "full_ft"], seeds=[0, 1])
    assert [(c.name, dict(c.params)) for c in chosen.strategies] == [("linear", {}), ("full_ft", {"epochs": 2})]
    assert chosen.seeds == (0, 1)


def test_extends_takes_the_base_suite_and_replaces_whole_keys(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({
        "backbones": {"vit-mini": {}}, "streams": {"mini-split-digits": {"n_tasks": 5}},
        "strategies": {"linear": {"epochs": 3}, "lora": {"rank": 8}}, "seeds": [1993], "precision": "bf16"}))
    (tmp_path / "more.yaml").write_text(yaml.safe_dump({"extends": "base.yaml", "seeds": [1, 2, 3],
                                                        "strategies": {"linear": {"epochs": 1}}}))
    config = load_suite(tmp_path / "more.yaml")
    assert config.seeds == (1, 2, 3) and config.precision == "bf16" and config.name == "more"
    assert [(c.name, c.params) for c in config.strategies] == [("linear", {"epochs": 1})]  # a whole key replaced
    assert [c.name for c in config.streams] == ["mini-split-digits"]


def test_the_seeds_suite_is_the_default_suite_with_three_seeds():
    configs = Path(__file__).resolve().parent.parent / "configs"
    default, seeds = load_suite(configs / "mini.yaml"), load_suite(configs / "mini-seeds.yaml")
    assert seeds.seeds == (1993, 1994, 1995)
    assert dataclasses.replace(seeds, name=default.name, seeds=default.seeds) == default


@pytest.mark.parametrize("files, message", [
    ({"a.yaml": {"extends": "missing.yaml"}}, "base suite file .*missing.yaml.* not found"),
    ({"a.yaml": {"extends": "b.yaml"}, "b.yaml": {"extends": "a.yaml"}}, "makes a cycle"),
    ({"a.yaml": {"extends": 3}}, "must name a suite file"),
    ({"a.yaml": {"extends": "b.yaml"}, "b.yaml": ["not", "a", "mapping"]}, "must hold a mapping"),
])
def test_a_bad_extends_is_a_config_error(tmp_path, files, message):
    for name, content in files.items():
        (tmp_path / name).write_text(yaml.safe_dump(content))
    with pytest.raises(ConfigError, match=message):
        load_suite(tmp_path / "a.yaml")
