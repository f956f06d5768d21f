"""Typed, validated configuration: the suite file and every component's hyper-parameters.

Each component (strategy, stream, backbone) declares its hyper-parameters as a dataclass whose fields carry
defaults and whose `__post_init__` checks ranges with `require`. `make_config` builds such a dataclass from a
YAML mapping, rejecting unknown keys and wrong types with a message that names the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, TypeVar, Union

import yaml

from benchmark.errors import ConfigError

C = TypeVar("C")


def require(condition: bool, key: str, allowed: str, value: Any) -> None:
    """Raise a ConfigError naming `key`, the allowed range and the value given, unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{key}: must be {allowed}, got {value!r}")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a YAML scalar to the field's declared type; YAML reads `1e-4` as a string, so floats parse strings."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        return _coerce(value, next(a for a in options if a is not type(None)), key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: must be a list, got {value!r}")
        (item_type, *_) = typing.get_args(annotation)
        return tuple(_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {value!r}")
        return value
    if annotation is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: must be a number, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string, got {value!r}")
        return value
    return value


def make_config(cls: type[C], raw: Mapping[str, Any] | None, where: str) -> C:
    """Build dataclass `cls` from `raw`; `where` (e.g. 'strategies.full_ft') prefixes every error message."""
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping of hyper-parameters, got {raw!r}")
    raw = dict(raw or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(fields) or '(none)'}")
    hints = typing.get_type_hints(cls)
    values = {name: _coerce(value, hints[name], f"{where}.{name}") for name, value in raw.items()}
    try:
        return cls(**values)
    except ConfigError as error:
        raise ConfigError(f"{where}.{error}") from None


def apply_preset(config: Any, presets: Mapping[str, Mapping[str, Any]]) -> None:
    """Fill the fields of a frozen dataclass `config` that are None with the values of its named preset,
    `presets[config.preset]`; fields the user set win. Call it first in `__post_init__`. A resolved config validates
    to itself, so a run's recorded hyper-parameters rebuild the same configuration."""
    require(config.preset in presets, "preset", f"one of {', '.join(presets)}", config.preset)
    for key, value in presets[config.preset].items():
        if getattr(config, key) is None:
            object.__setattr__(config, key, value)


def config_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as a plain JSON-able dict (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


@dataclasses.dataclass(frozen=True)
class Component:
    """A registered name with its raw hyper-parameters (validated by the component's own config class)."""

    name: str
    params: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class RetentionConfig:
    """How retention of the pre-training domain is measured: by which protocols, on how many images."""

    protocols: tuple[Component, ...] = (Component("head", {}),)  # names in benchmark.retention.PROTOCOLS + params
    eval_size: int = 2000  # images in the seeded subset of the pre-training domain's test set
    subset_seed: int = 0  # the subset is the same for every run, whatever the run's seed

    def __post_init__(self) -> None:
        require(self.eval_size >= 1, "eval_size", ">= 1", self.eval_size)


def parse_retention(raw: Any) -> RetentionConfig:
    """`retention:` of a suite; `protocols` is a list of names or a mapping name -> hyper-parameters."""
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(f"retention: must be a mapping of hyper-parameters, got {raw!r}")
    raw = dict(raw or {})
    protocols = _components(raw.pop("protocols", ["head"]), "retention.protocols")
    return dataclasses.replace(make_config(RetentionConfig, raw, "retention"), protocols=protocols)


def retention_dict(retention: RetentionConfig, protocol_params: Callable[[str, Mapping[str, Any]], Any]
                   ) -> dict[str, Any]:
    """The JSON form a run records, each protocol's hyper-parameters validated and completed by `protocol_params`."""
    return {"protocols": {p.name: config_dict(protocol_params(p.name, p.params)) for p in retention.protocols},
            "eval_size": retention.eval_size, "subset_seed": retention.subset_seed}


@dataclasses.dataclass(frozen=True)
class ExecutorConfig:
    """Where runs execute (benchmark/executors.py); the YAML key `executor`, overridden by --executor etc."""

    name: str = "local"  # local, ray or submitit
    workers: int = 1  # local: runs at once (1 = one after another in this process)
    ray_address: Optional[str] = None  # ray: "auto" joins a running cluster; None starts a local instance
    ray_num_cpus: Optional[int] = None  # ray, local instance only: CPUs it may use (default: all)
    cpus_per_run: float = 1.0  # ray and submitit: resources each run asks for
    gpus_per_run: float = 0.0
    submitit_cluster: Optional[str] = None  # submitit: None = auto (SLURM when there), "local" = this machine
    submitit_folder: str = "submitit"  # logs of submitit jobs, inside the results folder
    timeout_min: int = 24 * 60  # submitit: wall-time limit of each job

    def __post_init__(self) -> None:
        require(self.workers >= 1, "workers", ">= 1", self.workers)
        require(self.cpus_per_run > 0, "cpus_per_run", "> 0", self.cpus_per_run)
        require(self.gpus_per_run >= 0, "gpus_per_run", ">= 0", self.gpus_per_run)
        require(self.timeout_min >= 1, "timeout_min", ">= 1", self.timeout_min)


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
    """One YAML suite: the grid backbones x streams x strategies x seeds and how to run it."""

    name: str
    backbones: tuple[Component, ...]
    streams: tuple[Component, ...]
    strategies: tuple[Component, ...]
    seeds: tuple[int, ...] = (1993,)
    retention: RetentionConfig = RetentionConfig()
    device: str = "auto"  # auto (cuda if available), cpu, cuda
    precision: str = "auto"  # auto (bf16 autocast on cuda, fp32 on cpu), fp32, bf16
    loader_workers: int = 0  # processes decoding training images (image-file benchmarks on a GPU: ~8); 0 = in-process
    executor: ExecutorConfig = ExecutorConfig()
    tracking: tuple[Component, ...] = ()  # experiment-tracking sinks (benchmark/tracking/), none by default


SUITE_KEYS = ("backbones", "streams", "strategies", "seeds", "retention", "device", "precision", "loader_workers",
              "executor", "tracking")


def _components(raw: Any, key: str) -> tuple[Component, ...]:
    """`{name: {params}}` or `[name, ...]` -> components; an empty grid axis is an error."""
    if isinstance(raw, list):
        raw = {name: {} for name in raw}
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{key}: must be a non-empty mapping of name -> hyper-parameters, got {raw!r}")
    for name, params in raw.items():
        if params is not None and not isinstance(params, dict):
            raise ConfigError(f"{key}.{name}: must be a mapping of hyper-parameters, got {params!r}")
    return tuple(Component(str(name), dict(params or {})) for name, params in raw.items())


def parse_suite(raw: Any, name: str) -> SuiteConfig:
    """Validate the structure of a suite mapping (component names and params are checked by their registries)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"suite {name!r}: the file must hold a mapping with keys {', '.join(SUITE_KEYS)}")
    unknown = sorted(set(raw) - set(SUITE_KEYS))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in suite {name!r}; valid keys: {', '.join(SUITE_KEYS)}")
    seeds = _coerce(raw.get("seeds", [1993]), tuple[int, ...], "seeds")
    require(len(seeds) > 0 and len(set(seeds)) == len(seeds), "seeds", "a non-empty list of distinct integers", seeds)
    device = _coerce(raw.get("device", "auto"), str, "device")
    require(device in ("auto", "cpu", "cuda"), "device", "one of auto, cpu, cuda", device)
    precision = _coerce(raw.get("precision", "auto"), str, "precision")
    require(precision in ("auto", "fp32", "bf16"), "precision", "one of auto, fp32, bf16", precision)
    loader_workers = _coerce(raw.get("loader_workers", 0), int, "loader_workers")
    require(loader_workers >= 0, "loader_workers", ">= 0", loader_workers)
    return SuiteConfig(
        name=name,
        backbones=_components(raw.get("backbones"), "backbones"),
        streams=_components(raw.get("streams"), "streams"),
        strategies=_components(raw.get("strategies"), "strategies"),
        seeds=seeds,
        retention=parse_retention(raw.get("retention")),
        device=device,
        precision=precision,
        loader_workers=loader_workers,
        executor=make_config(ExecutorConfig, raw.get("executor"), "executor"),
        tracking=_components(raw["tracking"], "tracking") if raw.get("tracking") else (),
    )


def load_suite(path: Path) -> SuiteConfig:
    """Read and validate a YAML suite file; the suite's name is the file's stem."""
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found; pass an existing YAML file with --config")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{where}; fix the syntax") from None
    return parse_suite(raw, path.stem)


def select(config: SuiteConfig, *, streams: list[str] | None = None, strategies: list[str] | None = None,
           seeds: list[int] | None = None, executor: Mapping[str, Any] | None = None) -> SuiteConfig:
    """Narrow (or extend) a suite from the command line: named components keep their configured hyper-parameters,
    names the file does not list run with their defaults."""
    def pick(configured: tuple[Component, ...], names: list[str] | None) -> tuple[Component, ...]:
        if names is None:
            return configured
        by_name = {c.name: c for c in configured}
        return tuple(by_name.get(name, Component(name, {})) for name in dict.fromkeys(names))

    if seeds is not None:
        require(len(set(seeds)) == len(seeds), "--seeds", "distinct integers", seeds)
    return dataclasses.replace(
        config,
        streams=pick(config.streams, streams),
        strategies=pick(config.strategies, strategies),
        seeds=tuple(seeds) if seeds is not None else config.seeds,
        executor=make_config(ExecutorConfig, {**dataclasses.asdict(config.executor), **(executor or {})}, "executor"),
    )
