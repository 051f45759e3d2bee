"""``trustflow schema infer``: a first schema for a table, written for a person to check.

Types, categories and bounds are read off the rows, and every one of them is marked as taken
from the data, structurally (``public: false`` on the column) and in a comment. Differential
privacy needs bounds and categories that are public knowledge, not derived from the people in
the table, so a private run refuses such a column until the user confirms it with
``public: true``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import yaml
from pydantic import ValidationError

from trustflow.config import DatasetSchema
from trustflow.data.validate import LARGEST_USABLE
from trustflow.errors import ConfigError

# More distinct values than this in a text column: an identifier or free text, not a category.
MAX_CATEGORIES = 50


def _flow(value: object) -> str:
    """One YAML value on one line (lists in brackets, strings quoted when YAML needs it)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False)
    return text.strip().removesuffix("...").strip()  # a lone scalar ends its document with ...


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def _schema_name(path: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).strip("-.")
    return name or "data"


def infer_schema(
    frame: pd.DataFrame,
    origin: Path,
    target: str,
    sensitive: Sequence[str] = (),
    columns: Sequence[str] | None = None,
    missing_values: Sequence[str] = ("?", ""),
    task: str | None = None,
) -> str:
    """The schema of ``frame`` (every value as text, as a CSV source reads it) as commented
    YAML. ``columns`` keeps only those (the rest are listed under ``ignore``)."""
    header = [str(c) for c in frame.columns]
    named = [target, *sensitive, *(columns or [])]
    unknown = [c for c in dict.fromkeys(named) if c not in header]
    if unknown:
        raise ConfigError(f"{origin}: no column(s) {unknown}; the header has {header}")
    wanted = {*(columns or header), target, *sensitive}
    kept = [c for c in header if c in wanted]
    text = frame.astype("string").apply(lambda col: col.str.strip())
    absent = text.isna() | text.isin(list(missing_values))

    target_line, target_spec = _target(target, text[target][~absent[target]], origin, task)
    lines: list[str] = []
    ignored: dict[str, str] = {c: "not in --columns" for c in header if c not in kept}
    for name in kept:
        values = text[name][~absent[name]]
        if name == target:
            lines.append(target_line)
            continue
        if values.empty:
            ignored[name] = "no values"
            continue
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.notna().all() and (numbers.abs() <= LARGEST_USABLE).all():
            low, high = _number(numbers.min()), _number(numbers.max())
            if low == high:
                ignored[name] = f"one value only ({low})"
                continue
            spec: dict[str, object] = {"kind": "numeric", "bounds": [low, high], "public": False}
            note = "bounds from the data"
            if name in sensitive:  # audited by group: cut at its quartiles, to be reviewed
                spec["bins"] = sorted(
                    {_number(round(q)) for q in numbers.quantile([0.25, 0.5, 0.75])}
                )
                note += "; bins at its quartiles: choose groups that mean something"
            lines.append(f"  {_flow(name)}: {_flow(spec)}  # {note}")
        else:
            counts = values.value_counts()
            if len(counts) > MAX_CATEGORIES and name not in sensitive:
                ignored[name] = f"{len(counts)} distinct values: an identifier or free text?"
                continue
            lines += [
                f"  {_flow(name)}:  # categories from the data, most frequent first",
                "    kind: categorical",
                "    public: false",
                f"    categories: {_flow([str(c) for c in counts.index])}",
            ]
    document = [
        f"# Schema inferred by `trustflow schema infer` from {origin.name} ({len(frame):,} rows).",
        "# Check every line. Bounds and categories marked 'from the data' were read off these",
        "# rows: differential privacy refuses them until you confirm each column's are public",
        "# knowledge (not derived from the people in the table) by setting public: true.",
        f"name: {_flow(_schema_name(origin))}",
        "target:",
        f"  column: {_flow(target)}",
        *target_spec,
        f"sensitive_features: {_flow(list(sensitive))}",
        f"missing_values: {_flow(list(missing_values))}",
        "columns:",
        *lines,
    ]
    if ignored:
        document.append("ignore:  # columns the pipeline drops on reading")
        document += [f"  - {_flow(name)}  # {why}" for name, why in ignored.items()]
    result = "\n".join(document) + "\n"
    try:
        DatasetSchema.model_validate(yaml.safe_load(result))  # what we write must load
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"]
        raise ConfigError(f"{origin}: the inferred schema does not load: {problem}") from exc
    return result


def _target(name: str, values: pd.Series, origin: Path, task: str | None) -> tuple[str, list[str]]:
    """The target's column line, and the lines of the schema's target block after its column:
    the task and, for a binary target, its rarer class as the positive label. ``task`` None:
    binary for two distinct values, multiclass for up to 50, regression for more numbers."""
    counts = values.value_counts()
    shown = ", ".join(map(str, sorted(counts.index, key=str)[:5]))
    more = ", ..." if len(counts) > 5 else ""
    numbers = pd.to_numeric(values, errors="coerce")
    numeric = bool(numbers.notna().all()) and bool((numbers.abs() <= LARGEST_USABLE).all())
    if task is None:
        many = len(counts) > MAX_CATEGORIES
        task = "binary" if len(counts) == 2 else "regression" if many and numeric else "multiclass"
    if task == "regression":
        if not numeric or len(counts) < 2:
            raise ConfigError(
                f"{origin}: target '{name}' has {len(counts)} distinct values ({shown}{more}); "
                "a regression target needs two or more, all numbers"
            )
        low, high = _number(numbers.min()), _number(numbers.max())
        spec = {"kind": "numeric", "bounds": [low, high], "public": False}
        return f"  {_flow(name)}: {_flow(spec)}  # the target; bounds from the data", [
            "  task: regression"
        ]
    needed = {"binary": "exactly 2", "multiclass": f"3 to {MAX_CATEGORIES}"}[task]
    if (task == "binary") != (len(counts) == 2) or not 2 <= len(counts) <= MAX_CATEGORIES:
        raise ConfigError(
            f"{origin}: target '{name}' has {len(counts)} distinct values ({shown}{more}); a "
            f"{task} target needs {needed}"
            + (" (a number to predict is --task regression)" if numeric else "")
        )
    spec = {"kind": "categorical", "categories": sorted(map(str, counts.index))}
    line = f"  {_flow(name)}: {_flow(spec)}  # the target"
    if task == "multiclass":
        return line, ["  task: multiclass"]
    rare = counts[counts == counts.min()].index
    positive = _flow(str(sorted(rare, key=str)[-1]))
    return line, [f"  positive: {positive}  # the rarer class: check it is the one to predict"]
