"""A name -> entry registry with a decorator, as timm registers models; unknown names list the valid ones.

A builder registry may also accept whole families of names by a rule (e.g. any pretrained timm ViT), built by one
builder that is given the name: a zoo too large to register name by name.

A suite may name an entry with a variant label, `<name>@<variant>` (`lora@r4: {rank: 4}`, `lora@r16: {rank: 16}`):
the entry is `<name>`, the label names its runs, results and leaderboard rows.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Callable, Generic, Mapping, TypeVar

from benchmark.config import make_config
from benchmark.errors import ConfigError, shown
from benchmark.safe_io import NAME_RULE, is_safe_name

VARIANT = "@"  # "lora@r4" names entry "lora" under its own label: several settings of one entry in one suite
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")  # a variant label becomes part of a run's folder name
T = TypeVar("T")
B = TypeVar("B", bound=Callable[..., Any])


def entry_name(label: str) -> str:
    """The registered name in a label: `lora@r4` -> `lora`."""
    return label.split(VARIANT, 1)[0]


def check_label(name: str, kind: str) -> None:
    """A variant label is a word of letters, digits and `_ . + -` (it names folders): `lora@r4`, not `lora@a/b`; the
    whole name is a safe name (`benchmark.safe_io`: short enough for a file name, never a path)."""
    if VARIANT in name and not LABEL.fullmatch(name.split(VARIANT, 1)[1]):
        raise ConfigError(f"{kind} {shown(name)}: the label after {VARIANT!r} must be letters, digits and _ . + - "
                          f"(it names the run's folder), e.g. {entry_name(name)[:40]}@v2")
    if not is_safe_name(name):
        raise ConfigError(f"{kind} {shown(name)}: must be {NAME_RULE}")


class Registry(Generic[T]):
    """Maps names to entries (classes or builder functions) of one kind: strategies, streams, backbones, ..."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@STRATEGIES.register("full_ft")` above a class or function."""

        def add(entry: T) -> T:
            if VARIANT in name:
                raise ValueError(f"{self.kind} name {name!r} must not contain {VARIANT!r} (it marks variant labels)")
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        """The entry `name` (or `name@variant`) names."""
        check_label(name, self.kind)
        if entry_name(name) not in self._entries:
            raise ConfigError(f"unknown {self.kind} {shown(name)}; valid: {self.valid()}")
        return self._entries[entry_name(name)]

    def valid(self) -> str:
        """What an unknown-name error offers instead."""
        return ", ".join(self.names())

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


@dataclass(frozen=True)
class Family:
    """Names accepted by a rule instead of one by one, all built by `builder(name, params, ...)`."""

    description: str  # completes the unknown-name error, e.g. "any pretrained timm VisionTransformer <arch>.<tag>"
    matches: Callable[[str], bool]
    params: type
    builder: Callable[..., Any]


class BuilderRegistry(Registry[tuple[type, Callable[..., Any]]]):
    """Entries are builder functions, each with the dataclass of its hyper-parameters (streams, backbones)."""

    def __init__(self, kind: str, section: str) -> None:
        super().__init__(kind)
        self.section = section  # the suite file's key, prefixed to error messages
        self._families: list[Family] = []

    def register_family(self, description: str, matches: Callable[[str], bool], params: type) -> Callable[[B], B]:
        """Decorator: every unregistered name that `matches` accepts is built by `builder(name, params, ...)`."""

        def add(builder: B) -> B:
            self._families.append(Family(description, matches, params, builder))
            return builder

        return add

    def get(self, name: str) -> tuple[type, Callable[..., Any]]:
        """The registered entry of `name`, else that of the first family accepting it, bound to the name."""
        check_label(name, self.kind)
        if entry_name(name) not in self:
            for family in self._families:
                if family.matches(entry_name(name)):
                    return family.params, functools.partial(family.builder, entry_name(name))
        return super().get(name)

    def valid(self) -> str:
        return ", ".join([*self.names(), *(f"or {family.description}" for family in self._families)])

    def register_builder(self, name: str, params: type) -> Callable[[B], B]:
        """Decorator: register `builder(params, ...)` under `name` with `params` its hyper-parameter dataclass."""

        def add(builder: B) -> B:
            self.register(name)((params, builder))
            return builder

        return add

    def params(self, name: str, raw: Mapping[str, Any]) -> Any:
        """Validate `raw` hyper-parameters of `name` without building anything."""
        params_class, _ = self.get(name)
        return make_config(params_class, raw, f"{self.section}.{name}")

    def builder(self, name: str) -> Callable[..., Any]:
        return self.get(name)[1]
