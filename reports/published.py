"""Published numbers beside measured ones: for every leaderboard row that a results folder's `published.json`
(benchmark/published.py) has a number for, the published value of each metric it states, the measured mean minus
it, the number's source, and whether the run's recipe is the one the number was obtained with.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import pandas as pd

from benchmark.published import METRICS, PublishedNumber

RECIPE_SAME = "same recipe"
RECIPE_UNSTATED = "recipe not stated"


def recipe_text(recipe: Mapping[str, Any]) -> str:
    """A result's recipe block in one line (the leaderboard's `recipe` column, to group by): every setting but the
    input pipeline's details, which its name stands for."""
    return " ".join(f"{key}={value}" for key, value in recipe.items() if key != "input_pipeline")


def recipe_check(entry: PublishedNumber, recipe: Mapping[str, Any]) -> str:
    """`same recipe`, `differs: <key ours (published theirs)>; ...`, or `recipe not stated` by the entry."""
    if not entry.recipe:
        return RECIPE_UNSTATED
    differences = entry.recipe_differences(recipe)
    return "differs: " + "; ".join(differences) if differences else RECIPE_SAME


def published_columns(table: pd.DataFrame, recipes: Mapping[tuple, Mapping[str, Any]],
                      entries: Iterable[PublishedNumber], plain_strategy: Mapping[str, str]) -> pd.DataFrame:
    """`table` (a leaderboard) with `published_<metric>`, `diff_<metric>` (measured mean - published) and
    `paper_name_<metric>` for every metric some entry states, `published_source`, `published_split`, `published_seeds` and `published_recipe`; rows
    without a published number leave them empty. `recipes`: each row's recipe by (stream, strategy, backbone,
    config_id); `plain_strategy`: a row's strategy label -> the strategy as the suite names it (joint upper bounds
    are marked in labels)."""
    by_row = {entry.row_key: entry for entry in entries}
    stated = [m for m in METRICS if any(m in entry.values for entry in by_row.values())]
    if not stated:
        return table
    table = table.copy()
    columns: dict[str, list[Any]] = {name: [] for name in (
        *(f"{kind}_{m}" for m in stated for kind in ("published", "diff", "paper_name")), "published_source", "published_split", "published_seeds", "published_recipe")}
    for _, row in table.iterrows():
        entry = by_row.get((plain_strategy.get(row["strategy"], row["strategy"]), row["stream"], row["backbone"]))
        recipe = recipes.get((row["stream"], row["strategy"], row["backbone"], row["config_id"]), {})
        for metric in stated:
            value = entry.values.get(metric) if entry else None
            measured = row.get(f"{metric}_mean")
            columns[f"published_{metric}"].append(value)
            columns[f"diff_{metric}"].append(None if value is None or pd.isna(measured) else measured - value)
            columns[f"paper_name_{metric}"].append(entry.paper_metrics.get(metric) if entry else None)
        columns["published_source"].append(entry.source if entry else None)
        columns["published_split"].append(entry.split if entry else None)
        columns["published_seeds"].append(entry.seeds if entry else None)
        columns["published_recipe"].append(recipe_check(entry, recipe) if entry else None)
    for name, values in columns.items():
        table[name] = values
    return table


def published_metrics(table: pd.DataFrame) -> list[str]:
    """The metrics a leaderboard has published columns for."""
    return [m for m in METRICS if f"published_{m}" in table.columns]
