"""The types of a result's fields: what every reader (the suite, the reports, the notebook API) may assume of a result
that `benchmark.results.read_result` accepted, checked where it is read, since a results folder may come from
someone else.

Each field is described by a check `(value, where) -> why not, or None`, composed from a few shapes (numbers, names,
lists, mappings, square matrices). Fields that become paths (`run_id`, `stream`, `strategy`, `backbone`) must be safe
names (`benchmark.safe_io`); numbers must not be infinite (NaN stays: pandas reads it as missing); counts are finite
and whole; matrices are square; a confusion entry names a class of the run. A field a reader never reads may hold any
JSON value.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Optional

from benchmark.config import SEED_LIMIT
from benchmark.safe_io import MAX_NAME, MAX_RUN_ID, is_safe_name

Check = Callable[[Any, str], Optional[str]]  # (value, where) -> why it is not of the type, or None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def number(value: Any, where: str) -> Optional[str]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{where} is a {_kind(value)}, not a number"
    return f"{where} is infinite" if isinstance(value, float) and math.isinf(value) else None


def count(value: Any, where: str) -> Optional[str]:
    """A finite whole number >= 0 (parameters, FLOPs)."""
    why = number(value, where)
    if why is None and (math.isnan(value) or value < 0 or value != int(value)):
        return f"{where} is {value}, not a count"
    return why


def integer(value: Any, where: str) -> Optional[str]:
    if isinstance(value, int) and not isinstance(value, bool):
        return None
    return f"{where} is a {_kind(value)}, not an integer"


def text(value: Any, where: str) -> Optional[str]:
    return None if isinstance(value, str) else f"{where} is a {_kind(value)}, not a string"


def flag(value: Any, where: str) -> Optional[str]:
    return None if isinstance(value, bool) else f"{where} is a {_kind(value)}, not true or false"


def name(value: Any, where: str, limit: int = MAX_NAME) -> Optional[str]:
    """A value that becomes part of a path (a folder, a report file, a plot)."""
    if is_safe_name(value, limit):
        return None
    return f"{where} is not a safe name (letters, digits, _ . + @ -; at most {limit} characters)"


def run_id(value: Any, where: str) -> Optional[str]:
    return name(value, where, MAX_RUN_ID)


def seed(value: Any, where: str) -> Optional[str]:
    why = integer(value, where)
    return why or (None if 0 <= value < SEED_LIMIT else f"{where} is {value}, not a seed in [0, 2**32)")


def anything(value: Any, where: str) -> Optional[str]:
    return None


def optional(check: Check) -> Check:
    return lambda value, where: None if value is None else check(value, where)


def either(*checks: Check) -> Check:
    """The first check's reason when none accepts the value."""
    def check(value: Any, where: str) -> Optional[str]:
        reasons = [c(value, where) for c in checks]
        return None if None in reasons else reasons[0]
    return check


def list_of(item: Check) -> Check:
    def check(value: Any, where: str) -> Optional[str]:
        if not isinstance(value, list):
            return f"{where} is a {_kind(value)}, not a list"
        return next((why for i, v in enumerate(value) if (why := item(v, f"{where}[{i}]"))), None)
    return check


def mapping(values: Check = anything, known: Optional[Mapping[str, Check]] = None, required: tuple[str, ...] = ()
            ) -> Check:
    """A JSON object: the `required` keys present, each `known` key of its type, every other value `values`."""
    def check(value: Any, where: str) -> Optional[str]:
        if not isinstance(value, dict):
            return f"{where} is a {_kind(value)}, not a mapping"
        missing = next((key for key in required if key not in value), None)
        if missing is not None:
            return f"{where} lacks {missing!r}"
        for key, item in value.items():
            why = (known or {}).get(key, values)(item, f"{where}.{key}")
            if why:
                return why
        return None
    return check


def rectangular(item: Check, square: bool = False) -> Check:
    """A non-empty list of equally long lists (a matrix), square if asked."""
    rows = list_of(list_of(item))

    def check(value: Any, where: str) -> Optional[str]:
        why = rows(value, where)
        if why:
            return why
        widths = {len(row) for row in value}
        if not value or len(widths) != 1 or (square and widths != {len(value)}):
            return f"{where} is not a {'square' if square else 'rectangular'} matrix"
        return None
    return check


NUMBER_OR_NULL = optional(number)
NUMBERS = list_of(NUMBER_OR_NULL)
SQUARE = rectangular(number, square=True)


def spec_fields() -> dict[str, Check]:
    """A run's configuration (`RunSpec.as_dict`): what `RunSpec(**config)` needs, typed."""
    from benchmark.results import RunSpec  # results reads results through this module

    types: dict[str, Check] = {"stream": name, "strategy": name, "backbone": name, "seed": seed,
                               "device": text, "precision": text, "class_order_seed": optional(seed),
                               "train_seed": optional(seed)}
    return {f.name: types.get(f.name, mapping()) for f in dataclasses.fields(RunSpec)}


def config(value: Any, where: str) -> Optional[str]:
    fields = spec_fields()
    unknown = next((key for key in (value if isinstance(value, dict) else {}) if key not in fields), None)
    if unknown is not None:
        return f"{where} has the unknown key {str(unknown)[:40]!r}"
    required = tuple(key for key in fields if key not in ("class_order_seed", "train_seed"))
    return mapping(known=fields, required=required)(value, where)


IDENTITY: dict[str, Check] = {"schema_version": integer, "run_id": run_id, "status": text, "stream": name,
                              "strategy": name, "backbone": name, "seed": seed, "config": config, "error": text,
                              "traceback": text, "versions": mapping(), "recipe": mapping(),
                              "joint_upper_bound": flag}
FINISHED: dict[str, Check] = {
    "accuracy_matrix": SQUARE,
    "accuracy_matrix_task_aware": SQUARE,
    "metrics": mapping(either(NUMBER_OR_NULL, NUMBERS, mapping(either(NUMBER_OR_NULL, NUMBERS))),
                       known={"avg_acc": number, "retained_pretrain_acc": either(NUMBERS, mapping(NUMBERS))},
                       required=("avg_acc", "retained_pretrain_acc")),
    "cost": mapping(either(NUMBER_OR_NULL, text, NUMBERS),
                    known={key: count for key in ("params_trainable", "params_added", "flops_per_image")}
                    | {"wall_time_s": number},
                    required=("params_trainable", "params_added", "flops_per_image", "wall_time_s")),
    "diagnostics": mapping(either(NUMBERS, list_of(NUMBERS)), known={"ece": list_of(number)}),
    "retention_protocols": list_of(name),
    "class_order": list_of(integer),
    "task_classes": list_of(list_of(integer)),
    "task_names": list_of(text),
    "gate_masks": rectangular(number),
    "gate_blocks": list_of(text),
}


def _confusion(result: Mapping[str, Any]) -> Optional[str]:
    """Every confusion entry [true, predicted, count] names a class of the run as the true one."""
    classes = len(result.get("class_order", []))
    for entry in result.get("diagnostics", {}).get("confusion", []):
        if len(entry) != 3 or any(not isinstance(v, int) or isinstance(v, bool) for v in entry) \
                or not 0 <= entry[0] < classes:
            return "diagnostics.confusion holds an entry that is not [true class, predicted, count] of this run"
    return None


def _shapes(result: Mapping[str, Any]) -> Optional[str]:
    """Per-task lists are as long as the matrix; a retention curve given as a list has its protocol named."""
    tasks = len(result["accuracy_matrix"])
    for key in ("task_names", "task_classes", "accuracy_matrix_task_aware"):
        if key in result and len(result[key]) != tasks:
            return f"{key} does not have one entry per task ({tasks})"
    if isinstance(result["metrics"]["retained_pretrain_acc"], list) and not result.get("retention_protocols"):
        return "metrics.retained_pretrain_acc is a list but retention_protocols names no protocol"
    return _confusion(result)


def type_problem(result: Mapping[str, Any], finished: bool) -> Optional[str]:
    """Why a result's fields are not of their types (the first problem found), or None. `finished`: a result of
    status ok, whose numbers the reports read."""
    fields = {**IDENTITY, **(FINISHED if finished else {})}
    for key, check in fields.items():
        if key in result:
            why = check(result[key], key)
            if why:
                return why
    return _shapes(result) if finished else None
