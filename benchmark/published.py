"""Published numbers as data: a paper configuration's `published:` block, validated like the rest of the suite file,
written beside the results (`published.json`) so that the reports show each number next to what the suite measured,
with the difference and the number's source.

Each entry names the suite's strategy (name or name@label), stream and backbone it belongs beside, the published
values under the suite's metric names (`avg_inc_acc`, `acc_pooled_last`, `avg_acc`, `bwt`, `forgetting`;
docs/metrics.md maps papers' names to them) with the paper's own name for each, the split and seeds it was obtained
with, where it is written (`source`: repository@commit path:line, or paper and table), and the recipe it was obtained
with, in the keys of a result's `recipe` block (benchmark/recipe.py), so that a run whose recipe differs says so.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from benchmark.config import make_config, require
from benchmark.errors import ConfigError

PUBLISHED_FILE = "published.json"
METRICS = ("avg_inc_acc", "acc_pooled_last", "avg_acc", "bwt", "forgetting")
RECIPE_KEYS = ("input", "precision", "class_order", "optimizer", "lr", "batch_size", "epochs", "schedule",
               "grad_clip", "drop_last", "head_init")
SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class PublishedNumber:
    """One published result, beside the suite's (strategy, stream, backbone) row that reproduces it."""

    strategy: str  # the suite's strategy entry (name or name@label)
    stream: str  # the suite's stream entry
    backbone: str  # the suite's backbone entry: the weights the number was obtained with
    source: str  # where the number is written: repository@commit path:line, or paper and table
    split: str  # the protocol, e.g. "B0-Inc10: 10 tasks x 10 classes, class order np.random.seed(1993)"
    seeds: str  # e.g. "one run, seed 1993" or "mean of 5 runs, seeds 0-4"
    avg_inc_acc: Optional[float] = None  # the published values (%), under the suite's metric names
    acc_pooled_last: Optional[float] = None
    avg_acc: Optional[float] = None
    bwt: Optional[float] = None
    forgetting: Optional[float] = None
    paper_metrics: Mapping[str, str] = dataclasses.field(default_factory=dict)  # suite metric -> the paper's name
    recipe: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the published run's recipe
    note: str = ""

    def __post_init__(self) -> None:
        for key in ("strategy", "stream", "backbone", "source", "split", "seeds"):
            require(bool(getattr(self, key).strip()), key, "a non-empty string", getattr(self, key))
        require(bool(self.values), "values", f"at least one of {', '.join(METRICS)}", None)
        require(isinstance(self.paper_metrics, Mapping) and set(self.paper_metrics) == set(self.values)
                and all(isinstance(v, str) and v for v in self.paper_metrics.values()), "paper_metrics",
                f"a mapping giving the paper's name of each published metric ({', '.join(self.values)})",
                self.paper_metrics)
        require(isinstance(self.recipe, Mapping) and set(self.recipe) <= set(RECIPE_KEYS)
                and all(isinstance(v, SCALARS) for v in self.recipe.values()), "recipe",
                f"a mapping of {', '.join(RECIPE_KEYS)} to plain values", self.recipe)

    @property
    def values(self) -> dict[str, float]:
        """The published metrics that are given, by the suite's name."""
        return {name: getattr(self, name) for name in METRICS if getattr(self, name) is not None}

    @property
    def row_key(self) -> tuple[str, str, str]:
        return self.strategy, self.stream, self.backbone

    def recipe_differences(self, recipe: Mapping[str, Any]) -> list[str]:
        """`key ours (published theirs)` for every recipe setting this number states that `recipe` (a result's)
        does not share; numbers compare as numbers (an lr of 0.001 equals 1e-3)."""
        return [f"{key} {recipe.get(key)} (published {value})" for key, value in self.recipe.items()
                if not _same(recipe.get(key), value)]


def _same(ours: Any, theirs: Any) -> bool:
    if isinstance(ours, (int, float)) and isinstance(theirs, (int, float)) and not isinstance(ours, bool):
        return math.isclose(ours, theirs, rel_tol=1e-9)
    return ours == theirs


def parse_published(raw: Any, strategies: set[str], streams: set[str], backbones: set[str]
                    ) -> tuple[PublishedNumber, ...]:
    """The suite file's `published:` list, each entry checked against the suite's own entries (a number beside a row
    the suite never runs is a typo) and at most one per (strategy, stream, backbone)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"published: must be a list of entries, got {type(raw).__name__}")
    entries, seen = [], set()
    for index, item in enumerate(raw):
        where = f"published[{index}]"
        entry = make_config(PublishedNumber, item, where)
        for key, names in (("strategy", strategies), ("stream", streams), ("backbone", backbones)):
            require(getattr(entry, key) in names, f"{where}.{key}", f"one of this suite's {key} entries "
                    f"({', '.join(sorted(names))})", getattr(entry, key))
        require(entry.row_key not in seen, where, "the only entry for its (strategy, stream, backbone); put other "
                "sources in `note`", list(entry.row_key))
        seen.add(entry.row_key)
        entries.append(entry)
    return tuple(entries)


def published_dict(entry: PublishedNumber) -> dict[str, Any]:
    return {**dataclasses.asdict(entry), "paper_metrics": dict(entry.paper_metrics), "recipe": dict(entry.recipe)}


def write_published(out_dir: Path, entries: tuple[PublishedNumber, ...]) -> None:
    """`published.json` in the results folder, replacing an earlier one, when the suite states published numbers."""
    from benchmark.results import write_json_atomic  # results imports config: imported here, not at module level

    if entries:
        write_json_atomic(out_dir / PUBLISHED_FILE, {"published": [published_dict(e) for e in entries]})


def read_published(folder: Path) -> tuple[list[PublishedNumber], Optional[str]]:
    """The published numbers a results folder holds, and why none could be read (None: fine or no file)."""
    path = folder / PUBLISHED_FILE
    if not path.is_file():
        return [], None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        items = raw["published"] if isinstance(raw, dict) else None
        if not isinstance(items, list):
            raise ValueError("no list under 'published'")
        return [make_config(PublishedNumber, item, f"{path}[{i}]") for i, item in enumerate(items)], None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, ConfigError) as error:
        return [], f"skipped {path}: {' '.join(str(error).split())}"
