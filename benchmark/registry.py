"""A name -> entry registry with a decorator, as timm registers models; unknown names list the valid ones."""

from __future__ import annotations

from typing import Any, Callable, Generic, Mapping, TypeVar

from benchmark.config import make_config
from benchmark.errors import ConfigError

T = TypeVar("T")
B = TypeVar("B", bound=Callable[..., Any])


class Registry(Generic[T]):
    """Maps names to entries (classes or builder functions) of one kind: strategies, streams, backbones, ..."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@STRATEGIES.register("full_ft")` above a class or function."""

        def add(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


class BuilderRegistry(Registry[tuple[type, Callable[..., Any]]]):
    """Entries are builder functions, each with the dataclass of its hyper-parameters (streams, backbones)."""

    def __init__(self, kind: str, section: str) -> None:
        super().__init__(kind)
        self.section = section  # the suite file's key, prefixed to error messages

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
