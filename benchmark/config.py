"""Typed, validated configuration: the suite file and every component's hyper-parameters.

Each component (strategy, stream, backbone) declares its hyper-parameters as a dataclass whose fields carry
defaults and whose `__post_init__` checks ranges with `require`. `make_config` builds such a dataclass from a
YAML mapping, rejecting unknown keys and wrong types with a message that names the key and what is allowed.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar, Union

import yaml

from benchmark.errors import ConfigError

C = TypeVar("C")
SEED_LIMIT = 2**32  # numpy's RandomState (class orders, splits) takes seeds in [0, 2**32); torch and random take more


def require(condition: bool, key: str, allowed: str, value: Any) -> None:
    """Raise a ConfigError naming `key`, the allowed range and the value given, unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{key}: must be {allowed}, got {value!r}")


def _nearest_existing(path: Path) -> Path:
    """`path` or its closest ancestor that exists (the folder that a `mkdir(parents=True)` would start from)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def require_folder(path: str | Path, key: str, writable: bool = False) -> None:
    """`path` ("" = a default) is a folder or can become one: it is not a file, nor inside a file, and with
    `writable` the folder it would be created in accepts new files."""
    if not str(path):
        return
    existing = _nearest_existing(Path(path))
    require(existing.is_dir(), key, "a folder (or a path to create one at), not a file" if existing == Path(path)
            else f"a path to create a folder at, but {str(existing)!r} is a file", str(path))
    require(not writable or os.access(existing, os.W_OK | os.X_OK), key,
            f"a folder you may write to ({str(existing)!r} is not writable)", str(path))


def require_seed(seed: int, key: str) -> None:
    """A seed every generator of a run accepts (numpy's is the narrowest)."""
    require(0 <= seed < SEED_LIMIT, key, f"an integer in [0, 2**32 - 1 = {SEED_LIMIT - 1}]", seed)


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
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: must be a number, got {value!r}") from None
        require(math.isfinite(number), key, "a finite number", value)  # YAML's .inf / .nan pass every `> 0`
        return number
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string, got {value!r}")
        return value
    return value


def make_config(cls: type[C], raw: Mapping[str, Any] | None, where: str) -> C:
    """Build dataclass `cls` from `raw`; `where` (e.g. 'strategies.full_ft') prefixes every error message. Every
    float must be finite and every field named `*seed` a seed numpy accepts, whatever the dataclass."""
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping of hyper-parameters, got {raw!r}")
    raw = dict(raw or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(fields) or '(none)'}")
    hints = typing.get_type_hints(cls)
    values = {name: _coerce(value, hints[name], f"{where}.{name}") for name, value in raw.items()}
    for name, value in values.items():
        if name.endswith("seed") and isinstance(value, int):  # split_seed, subset_seed, ...: fed to numpy
            require_seed(value, f"{where}.{name}")
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


SUBMITIT_CLUSTERS = (None, "slurm", "local", "debug")  # submitit.AutoExecutor's clusters; None picks


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
        require(self.ray_num_cpus is None or self.ray_num_cpus >= 1, "ray_num_cpus", ">= 1 or null",
                self.ray_num_cpus)
        require(self.submitit_cluster in SUBMITIT_CLUSTERS, "submitit_cluster",
                "null (auto), " + ", ".join(c for c in SUBMITIT_CLUSTERS if c), self.submitit_cluster)
        require(self.submitit_folder != "" and not Path(self.submitit_folder).is_absolute()
                and ".." not in Path(self.submitit_folder).parts, "submitit_folder",
                "a relative folder name inside the results folder", self.submitit_folder)
        require(self.cpus_per_run > 0, "cpus_per_run", "> 0", self.cpus_per_run)
        require(self.gpus_per_run >= 0, "gpus_per_run", ">= 0", self.gpus_per_run)
        require(self.timeout_min >= 1, "timeout_min", ">= 1", self.timeout_min)


@dataclasses.dataclass(frozen=True)
class ComparisonConfig:
    """How the leaderboard compares strategies (reports/statistics.py); the YAML key `comparison`."""

    reference: Optional[str] = None  # strategy (name or name@label) every other is tested against; None: best mean
    level: float = 0.05  # family-wise error rate of the Holm-corrected paired t-tests, per stream

    def __post_init__(self) -> None:
        require(0 < self.level < 1, "level", "between 0 and 1 (exclusive)", self.level)


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
    """One YAML suite: the grid backbones x streams x strategies x seeds and how to run it."""

    name: str
    backbones: tuple[Component, ...]
    streams: tuple[Component, ...]
    strategies: tuple[Component, ...]
    seeds: tuple[int, ...] = (1993,)
    class_order_seed: Optional[int] = None  # set: every run's class order comes from it, `seeds` vary training only
    train_seed: Optional[int] = None  # set: every run trains with it, `seeds` vary the class order only
    retention: RetentionConfig = RetentionConfig()
    device: str = "auto"  # auto (cuda if available), cpu, cuda
    precision: str = "auto"  # auto (bf16 where the device computes it natively, else fp32: runtime.py), fp32, bf16
    loader_workers: int = 0  # processes decoding training images (image-file benchmarks on a GPU: ~8); 0 = in-process
    executor: ExecutorConfig = ExecutorConfig()
    comparison: ComparisonConfig = ComparisonConfig()
    tracking: tuple[Component, ...] = ()  # experiment-tracking sinks (benchmark/tracking/), none by default
    share: bool = True  # evaluations that cannot differ computed once per process (same numbers either way)
    published: tuple[Any, ...] = ()  # published numbers shown beside the measured ones (benchmark/published.py)
    imports: tuple[str, ...] = ()  # modules registering strategies, streams or backbones (benchmark/plugins.py)


SUITE_KEYS = ("backbones", "streams", "strategies", "seeds", "class_order_seed", "train_seed", "retention", "device",
              "precision", "loader_workers", "executor", "comparison", "tracking", "share", "published", "imports")


def _split_seeds(raw: Mapping[str, Any]) -> tuple[Optional[int], Optional[int]]:
    """`class_order_seed` and `train_seed`: at most one fixed, since `seeds` must still vary something."""
    order = _coerce(raw.get("class_order_seed"), Optional[int], "class_order_seed")
    train = _coerce(raw.get("train_seed"), Optional[int], "train_seed")
    require(order is None or train is None, "class_order_seed / train_seed",
            "set one at most (the seeds vary the other; drop one of them)", {"class_order_seed": order,
                                                                            "train_seed": train})
    return order, train


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


def check_seeds(seeds: tuple[int, ...], key: str) -> tuple[int, ...]:
    """A grid's seeds: a non-empty list of distinct integers that every generator accepts."""
    require(len(seeds) > 0 and len(set(seeds)) == len(seeds), key, "a non-empty list of distinct integers",
            list(seeds))
    for seed in seeds:
        require_seed(seed, key)
    return seeds


def parse_suite(raw: Any, name: str) -> SuiteConfig:
    """Validate the structure of a suite mapping (component names and params are checked by their registries)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"suite {name!r}: the file must hold a mapping with keys {', '.join(SUITE_KEYS)}, got "
                          f"{type(raw).__name__ if raw is not None else 'an empty file'}")
    unknown = sorted(set(raw) - set(SUITE_KEYS))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in suite {name!r}; valid keys: {', '.join(SUITE_KEYS)}")
    seeds = check_seeds(_coerce(raw.get("seeds", [1993]), tuple[int, ...], "seeds"), "seeds")
    device = _coerce(raw.get("device", "auto"), str, "device")
    require(device in ("auto", "cpu", "cuda"), "device", "one of auto, cpu, cuda", device)
    precision = _coerce(raw.get("precision", "auto"), str, "precision")
    require(precision in ("auto", "fp32", "bf16"), "precision", "one of auto, fp32, bf16", precision)
    loader_workers = _coerce(raw.get("loader_workers", 0), int, "loader_workers")
    require(loader_workers >= 0, "loader_workers", ">= 0", loader_workers)
    class_order_seed, train_seed = _split_seeds(raw)
    backbones = _components(raw.get("backbones"), "backbones")
    streams = _components(raw.get("streams"), "streams")
    strategies = _components(raw.get("strategies"), "strategies")
    from benchmark.published import parse_published  # it builds on this module's checks

    published = parse_published(raw.get("published"), {c.name for c in strategies}, {c.name for c in streams},
                                {c.name for c in backbones})
    return SuiteConfig(
        name=name,
        backbones=backbones,
        streams=streams,
        strategies=strategies,
        seeds=seeds,
        class_order_seed=class_order_seed,
        train_seed=train_seed,
        retention=parse_retention(raw.get("retention")),
        device=device,
        precision=precision,
        loader_workers=loader_workers,
        executor=make_config(ExecutorConfig, raw.get("executor"), "executor"),
        comparison=make_config(ComparisonConfig, raw.get("comparison"), "comparison"),
        share=_coerce(raw.get("share", True), bool, "share"),
        tracking=_components(raw["tracking"], "tracking") if raw.get("tracking") else (),
        published=published,
        imports=_coerce(raw.get("imports", []), tuple[str, ...], "imports"),
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.safe_load`, except that a key given twice in one mapping is an error (safe_load keeps the last one,
    so a strategy listed twice would silently lose its first hyper-parameters). Keys merged in with `<<: *anchor`
    may be overridden: that is what merging is for (paper configs' `published:` entries share their fields)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: merged keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _UniqueKeyLoader.construct_mapping)


def read_yaml(path: Path, what: str, flag: str) -> Any:
    """The YAML document in `path`: a missing file, a folder, unreadable bytes, text that is not UTF-8 or not YAML,
    or a key given twice is a ConfigError naming the file (`what`: e.g. 'config file'; `flag`: how to pass another)."""
    name = repr(str(path))
    if path.is_dir():
        raise ConfigError(f"{what} {name} is a folder; pass a YAML file with {flag}")
    if not path.is_file():
        raise ConfigError(f"{what} {name} not found; pass an existing YAML file with {flag}")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise ConfigError(f"{what} {name} cannot be read ({error.strerror}); fix its permissions or pass another "
                          f"with {flag}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{what} {name} is not UTF-8 text (byte {error.start}); pass a YAML text file with "
                          f"{flag}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = f" ({error.problem})" if getattr(error, "problem", None) else ""
        raise ConfigError(f"{what} {name} is not valid YAML{where}{problem}; fix the syntax") from None


def load_suite(path: Path, overrides: Sequence[str] = ()) -> SuiteConfig:
    """Read and validate a YAML suite file, with `--set KEY=VALUE` `overrides` applied first; the suite's name is the
    file's stem."""
    return parse_suite(apply_overrides(read_extended(path), overrides), path.stem)


def apply_overrides(raw: Any, overrides: Sequence[str]) -> Any:
    """The suite mapping with each `KEY=VALUE` set: KEY a dotted path (`strategies.lora.rank`, `seeds`), created where
    it is missing; VALUE read as YAML (`4`, `1.0e-4`, `[1, 2, 3]`, `{rank: 4}`). The result is validated as the file
    is, so a wrong key or value is the same one-line error it would be in the file."""
    if not overrides:
        return raw
    if not isinstance(raw, dict):
        raise ConfigError("--set: the suite file must hold a mapping to set keys in")
    result = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.split(".")
        if not sep or not all(parts):
            raise ConfigError(f"--set {item!r}: must be KEY=VALUE with a dotted KEY, e.g. strategies.lora.rank=4")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: the value {text!r} is not valid YAML") from None
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parts[:depth + 1])} is {child!r} in the file, not a mapping "
                                  "of keys; set it whole instead")
            node = child
        node[parts[-1]] = value
    return result


def read_extended(path: Path) -> Any:
    """A suite file's mapping, with `extends: <file>` (a path relative to the file) resolved: the base suite's keys,
    each key the file gives replacing the base's whole (configs/mini-seeds.yaml: mini.yaml with other seeds). A base
    may extend another; a cycle is an error."""
    raw = read_yaml(path, "config file", "--config")
    seen = [path.resolve()]
    while isinstance(raw, dict) and "extends" in raw:
        base = raw.pop("extends")
        if not isinstance(base, str) or not base:
            raise ConfigError(f"extends: in {str(path)!r} must name a suite file (a path relative to it), got "
                              f"{base!r}")
        path = seen[-1].parent / base
        if path.resolve() in seen:
            raise ConfigError(f"extends: {base!r} in {str(seen[-1])!r} makes a cycle of suite files; remove one")
        parent = read_yaml(path, "base suite file", f"`extends:` in {seen[-1].name}")
        if not isinstance(parent, dict):
            raise ConfigError(f"base suite file {str(path)!r} must hold a mapping; fix it or the `extends:` naming it")
        seen.append(path.resolve())
        raw = {**parent, **raw}
    return raw


def select(config: SuiteConfig, *, streams: list[str] | None = None, strategies: list[str] | None = None,
           seeds: list[int] | None = None, executor: Mapping[str, Any] | None = None,
           imports: Sequence[str] = ()) -> SuiteConfig:
    """Narrow (or extend) a suite from the command line: named components keep their configured hyper-parameters,
    names the file does not list run with their defaults."""
    def pick(configured: tuple[Component, ...], names: list[str] | None) -> tuple[Component, ...]:
        if names is None:
            return configured
        by_name = {c.name: c for c in configured}
        return tuple(by_name.get(name, Component(name, {})) for name in dict.fromkeys(names))

    if seeds is not None:
        check_seeds(tuple(seeds), "--seeds")
    return dataclasses.replace(
        config,
        streams=pick(config.streams, streams),
        strategies=pick(config.strategies, strategies),
        seeds=tuple(seeds) if seeds is not None else config.seeds,
        executor=make_config(ExecutorConfig, {**dataclasses.asdict(config.executor), **(executor or {})}, "executor"),
        imports=tuple(dict.fromkeys([*config.imports, *imports])),
    )
