"""Typed, validated configuration: the suite file and every component's hyper-parameters.

Each component (strategy, stream, backbone) declares its hyper-parameters as a dataclass whose fields carry
defaults and whose `__post_init__` checks ranges with `require`. `make_config` builds such a dataclass from a
YAML mapping, rejecting unknown keys and wrong types with a message that names the key and what is allowed.

Every value is checked against what can exist downstream: integers fit 64 bits (torch and numpy take no more), floats
are finite (an integer too large for a float is an error, not an OverflowError), every field named `*seed` is a seed
numpy accepts (`require_seed`, the one check of every seed), grid entries are safe names (`benchmark.safe_io`: they
name files). A YAML file is bounded before anything reads it: its size (`MAX_YAML_BYTES`), its nesting and the
number of nodes its aliases expand to (`MAX_YAML_NODES`), so an alias bomb is refused instead of expanding in memory
or in an error message. Messages echo values through `benchmark.errors.shown`: bounded, one line.
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

from benchmark.errors import ConfigError, brief, shown

C = TypeVar("C")
SEED_LIMIT = 2**32  # numpy's RandomState (class orders, splits) takes seeds in [0, 2**32); torch and random take more
INT_LIMIT = 2**63  # integers must fit a signed 64-bit integer (torch's and numpy's int64)
MAX_YAML_BYTES = 2**20  # a suite file is a few KB; 1 MiB leaves room for long published blocks
MAX_YAML_NODES = 100_000  # nodes of a YAML document counted with every alias expanded (a suite has hundreds)
MAX_WORKERS = 1024  # worker processes at once: more than any machine runs usefully, fewer than the OS allows


def require(condition: bool, key: str, allowed: str, value: Any) -> None:
    """Raise a ConfigError naming `key`, the allowed range and the value given, unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{key}: must be {allowed}, got {shown(value)}")


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
    require(not os.path.islink(path) or os.path.exists(path), key,
            "a folder or a path to create one at, not a symbolic link to a missing target", str(path))
    existing = _nearest_existing(Path(path))
    require(existing.is_dir(), key, "a folder (or a path to create one at), not a file" if existing == Path(path)
            else f"a path to create a folder at, but {str(existing)!r} is a file", str(path))
    require(not writable or os.access(existing, os.W_OK | os.X_OK), key,
            f"a folder you may write to ({str(existing)!r} is not writable)", str(path))


def require_seed(seed: int, key: str) -> None:
    """A seed every generator of a run accepts (numpy's is the narrowest): the one check of every seed-like value
    (`seeds`, `--seeds`, `class_order_seed`, `train_seed`, every hyper-parameter named `*seed`)."""
    require(0 <= seed < SEED_LIMIT, key, f"an integer in [0, 2**32 - 1 = {SEED_LIMIT - 1}]", seed)


def is_seed_key(key: str) -> bool:
    """Whether the key names a seed (`split_seed`, `strategies.x.subset_seed`, `train_seed`)."""
    return key.rsplit(".", 1)[-1].endswith("seed")


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
            raise ConfigError(f"{key}: must be a list, got {shown(value)}")
        (item_type, *_) = typing.get_args(annotation)
        return tuple(_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {shown(value)}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {shown(value)}")
        if is_seed_key(key):
            require_seed(value, key)
        require(-INT_LIMIT <= value < INT_LIMIT, key, "an integer that fits 64 bits", value)
        return value
    if annotation is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
        except OverflowError:  # an integer beyond a float's range (about 1.8e308)
            raise ConfigError(f"{key}: must be a finite number, got {shown(value)}") from None
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: must be a number, got {shown(value)}") from None
        require(math.isfinite(number), key, "a finite number", value)  # YAML's .inf / .nan pass every `> 0`
        return number
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string, got {shown(value)}")
        return value
    return value


def make_config(cls: type[C], raw: Mapping[str, Any] | None, where: str) -> C:
    """Build dataclass `cls` from `raw`; `where` (e.g. 'strategies.full_ft') prefixes every error message. Every
    float must be finite, every integer fit 64 bits and every field named `*seed` be a seed numpy accepts, whatever
    the dataclass."""
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping of hyper-parameters, got {shown(raw)}")
    raw = dict(raw or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(raw) - set(fields), key=str)
    if unknown:
        raise ConfigError(f"{where}: unknown key {shown(unknown[0])}; valid keys: {', '.join(fields) or '(none)'}")
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
        raise ConfigError(f"retention: must be a mapping of hyper-parameters, got {shown(raw)}")
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
        require(self.workers <= MAX_WORKERS, "workers", f"at most {MAX_WORKERS} (processes at once)", self.workers)
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
class CacheConfig:
    """Where frozen features persist between worker processes and invocations (benchmark/feature_store.py); the YAML
    key `cache`: `false` (memory only), `true` (the default), a folder, or a mapping of these fields."""

    enabled: bool = True
    folder: str = ""  # "" = <results folder>/cache/features; share one folder between suites to share their features
    limit_gb: float = 20.0  # least recently used entries are deleted beyond this

    def __post_init__(self) -> None:
        require(0 < self.limit_gb <= 2**20, "cache.limit_gb", "a size in GB, > 0", self.limit_gb)

    def folder_for(self, out_dir: Path) -> Optional[Path]:
        """The store's folder for a suite writing to `out_dir`, or None when the cache is off."""
        if not self.enabled:
            return None
        return Path(self.folder).expanduser() if self.folder else out_dir / "cache" / "features"

    @property
    def limit_bytes(self) -> int:
        return int(self.limit_gb * 2**30)


def parse_cache(raw: Any) -> CacheConfig:
    """`cache:` as a flag, a folder or a mapping."""
    if isinstance(raw, bool):
        return CacheConfig(enabled=raw)
    if isinstance(raw, str):
        require(raw.strip() != "", "cache", "true, false, a folder or a mapping with enabled / folder / limit_gb", raw)
        return CacheConfig(folder=raw)
    return make_config(CacheConfig, raw, "cache")


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
    cache: CacheConfig = CacheConfig()  # ... and, with `share`, kept on disk for other processes and invocations
    published: tuple[Any, ...] = ()  # published numbers shown beside the measured ones (benchmark/published.py)
    imports: tuple[str, ...] = ()  # modules registering strategies, streams or backbones (benchmark/plugins.py)


SUITE_KEYS = ("backbones", "streams", "strategies", "seeds", "class_order_seed", "train_seed", "retention", "device",
              "precision", "loader_workers", "executor", "comparison", "tracking", "share", "cache", "published",
              "imports")


def _split_seeds(raw: Mapping[str, Any]) -> tuple[Optional[int], Optional[int]]:
    """`class_order_seed` and `train_seed`: at most one fixed, since `seeds` must still vary something."""
    order = _coerce(raw.get("class_order_seed"), Optional[int], "class_order_seed")
    train = _coerce(raw.get("train_seed"), Optional[int], "train_seed")
    require(order is None or train is None, "class_order_seed / train_seed",
            "set one at most (the seeds vary the other; drop one of them)", {"class_order_seed": order,
                                                                            "train_seed": train})
    return order, train


def _components(raw: Any, key: str) -> tuple[Component, ...]:
    """`{name: {params}}` or `[name, ...]` -> components; an empty grid axis is an error. (Names are checked by
    their registries, `benchmark.registry.check_label`: grid entries name run folders and report files.)"""
    if isinstance(raw, list):
        if not all(isinstance(name, typing.Hashable) for name in raw):
            raise ConfigError(f"{key}: must list names, got {shown(raw)}")
        raw = {name: {} for name in raw}
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{key}: must be a non-empty mapping of name -> hyper-parameters, got {shown(raw)}")
    for name, params in raw.items():
        if params is not None and not isinstance(params, dict):
            raise ConfigError(f"{key}.{name}: must be a mapping of hyper-parameters, got {shown(params)}")
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
        raise ConfigError(f"suite {shown(name)}: the file must hold a mapping with keys {', '.join(SUITE_KEYS)}, got "
                          f"{type(raw).__name__ if raw is not None else 'an empty file'}")
    unknown = sorted(set(raw) - set(SUITE_KEYS), key=str)
    if unknown:
        raise ConfigError(f"unknown key {shown(unknown[0])} in suite {shown(name)}; valid keys: "
                          f"{', '.join(SUITE_KEYS)}")
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
        cache=parse_cache(raw.get("cache")),
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
                raise yaml.constructor.ConstructorError(None, None, f"key {shown(key)} appears twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _UniqueKeyLoader.construct_mapping)


def _expanded_nodes(node: yaml.Node, limit: int) -> int:
    """The nodes of a composed YAML document with every alias expanded, counted without expanding anything (an
    aliased node counts once per use); a ConfigError-worthy ValueError beyond `limit` or for an alias to itself."""
    counts: dict[int, int] = {}
    open_nodes: set[int] = set()

    def count(item: yaml.Node) -> int:
        if id(item) in counts:
            return counts[id(item)]
        if id(item) in open_nodes:
            raise ValueError("an alias refers to a node that contains it")
        open_nodes.add(id(item))
        children = item.value if isinstance(item, yaml.SequenceNode) else (
            [part for pair in item.value for part in pair] if isinstance(item, yaml.MappingNode) else [])
        total = 1
        for child in children:
            total += count(child)
            if total > limit:
                raise ValueError(f"its aliases expand to more than {limit} values")
        open_nodes.discard(id(item))
        counts[id(item)] = total
        return total

    return count(node)


def _read_text(path: Path, what: str, flag: str) -> str:
    """The UTF-8 text of the regular file `path`, at most MAX_YAML_BYTES of it."""
    from benchmark.safe_io import UnreadableFile, read_bounded  # safe_io builds on this module's errors

    name = repr(str(path))  # a path is bounded by the OS (PATH_MAX)
    if path.is_dir():
        raise ConfigError(f"{what} {name} is a folder; pass a YAML file with {flag}")
    try:
        data = read_bounded(path, MAX_YAML_BYTES)
    except FileNotFoundError:
        raise ConfigError(f"{what} {name} not found; pass an existing YAML file with {flag}") from None
    except UnreadableFile as error:
        raise ConfigError(f"{what} {name} {error}; pass a YAML file of at most {MAX_YAML_BYTES // 2**20} MiB "
                          f"with {flag}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{what} {name} is not UTF-8 text (byte {error.start}); pass a YAML text file with "
                          f"{flag}") from None


def parse_yaml(text: str, subject: str) -> Any:
    """The YAML document `text`: not YAML, a key given twice, nesting deeper than Python recurses, or aliases
    expanding to more than MAX_YAML_NODES values is a ConfigError beginning with `subject` (e.g. "config file
    'x.yaml'").
    The document is composed and measured before any Python value is built from it."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_nodes(node, MAX_YAML_NODES)
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = f" ({brief(error.problem)})" if getattr(error, "problem", None) else ""
        raise ConfigError(f"{subject} is not valid YAML{where}{problem}; fix the syntax") from None
    except RecursionError:
        raise ConfigError(f"{subject} nests values too deeply; flatten it") from None
    except ValueError as error:  # an alias bomb, a self-containing alias, an integer of more than 4300 digits
        raise ConfigError(f"{subject} cannot be used: {brief(str(error))}; remove the aliases or values "
                          "that cause it") from None
    finally:
        loader.dispose()


def read_yaml(path: Path, what: str, flag: str) -> Any:
    """The YAML document in `path` (`parse_yaml`): a missing file, a folder, a FIFO or device, a file over
    MAX_YAML_BYTES or text that is not UTF-8 is a ConfigError naming the file too (`what`: e.g. 'config file';
    `flag`: how to pass another)."""
    return parse_yaml(_read_text(path, what, flag), f"{what} {str(path)!r}")


def load_suite(path: Path, overrides: Sequence[str] = ()) -> SuiteConfig:
    """Read and validate a YAML suite file, with `--set KEY=VALUE` `overrides` applied first; the suite's name is the
    file's stem."""
    return parse_suite(read_suite(path, overrides), path.stem)


def read_suite(path: Path, overrides: Sequence[str] = ()) -> Any:
    """The suite file's mapping (with what it `extends:`) and the `overrides` applied, not yet validated: needs
    nothing registered, so a command line reads it before loading torch and the strategies, and a missing or broken
    file answers at once."""
    return apply_overrides(read_extended(path), overrides)


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
            raise ConfigError(f"--set {shown(item)}: must be KEY=VALUE with a dotted KEY, e.g. strategies.lora.rank=4")
        value = parse_yaml(text, f"--set {brief(key)}: the value {shown(text)}")
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {brief(key)}: {brief('.'.join(parts[:depth + 1]))} is {shown(child)} in the "
                                  "file, not a mapping of keys; set it whole instead")
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
                              f"{shown(base)}")
        path = seen[-1].parent / base
        if path.resolve() in seen:
            raise ConfigError(f"extends: {shown(base)} in {str(seen[-1])!r} makes a cycle of suite files; remove one")
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
