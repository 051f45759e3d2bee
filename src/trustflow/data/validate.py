"""Schema check: the data either meets the dataset schema or is refused with a precise error."""

from __future__ import annotations

from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict

from trustflow.config import CategoricalColumn, DatasetSchema
from trustflow.errors import DataValidationError


class ValidationReport(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rows_in: int
    rows_out: int
    missing_policy: Literal["drop", "impute"]
    rows_with_missing: int  # rows with at least one missing feature value
    rows_dropped: int
    missing_by_column: dict[str, int]
    # values moved to the nearest bound, per column (the schema's ``out_of_bounds: clip``)
    clipped_by_column: dict[str, int] = {}
    columns_ignored: int = 0  # source columns dropped on reading (ignore, extra_columns: drop)


# Beyond this a value's square overflows float64 (scaling and variances square it): such a
# number is a corrupt cell, not data.
LARGEST_USABLE = 1e150


def _first(mask: pd.Series, values: pd.Series) -> tuple[int, object]:
    position = int(mask.to_numpy().argmax())
    return position + 1, values.iloc[position]


def validate_frame(
    frame: pd.DataFrame,
    schema: DatasetSchema,
    missing: Literal["drop", "impute"],
    origin: str,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Check ``frame`` against ``schema``; return typed columns in schema order and a report.

    Row numbers in messages count data rows from 1 (the header is not a row).
    """
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise DataValidationError(f"{origin}: no data rows")

    names = [str(c) for c in frame.columns]
    as_text = frame.astype("string").apply(lambda col: col.str.strip())
    header_rows = as_text.eq(pd.Series(names, index=frame.columns)).all(axis=1)
    if header_rows.any():
        row = int(header_rows.to_numpy().argmax()) + 1
        raise DataValidationError(f"{origin}: row {row} repeats the header row")

    missing_cols = [c for c in schema.columns if c not in frame.columns]
    if missing_cols:
        raise DataValidationError(f"{origin}: missing column(s) {missing_cols}")
    extra_cols = [c for c in names if c not in schema.columns]
    refused = [c for c in extra_cols if c not in schema.ignore]
    if refused and schema.extra_columns == "refuse":
        raise DataValidationError(
            f"{origin}: unexpected column(s) {refused} not in the schema (list them under "
            "ignore, or set extra_columns: drop)"
        )

    typed: dict[str, pd.Series] = {}
    clipped: dict[str, int] = {}
    for name, spec in schema.columns.items():
        text = as_text[name]
        absent = text.isna() | text.isin(list(schema.missing_values))
        if absent.all():
            raise DataValidationError(f"{origin}: column '{name}' has no values (all null)")
        if isinstance(spec, CategoricalColumn):
            unknown = ~absent & ~text.isin(list(spec.categories))
            if unknown.any():
                row, value = _first(unknown, text)
                raise DataValidationError(
                    f"{origin}: column '{name}' has unknown category '{value}' (row {row}); "
                    f"allowed: {', '.join(spec.categories)}"
                )
            # None, not pd.NA: scikit-learn treats None as missing; pd.NA makes it raise.
            typed[name] = text.astype(object).where(~absent, None)
        else:
            numbers = pd.to_numeric(text.where(~absent), errors="coerce")
            wrong = ~absent & numbers.isna()
            if wrong.any():
                row, value = _first(wrong, text)
                raise DataValidationError(
                    f"{origin}: column '{name}' expects numbers, found '{value}' (row {row})"
                )
            typed[name] = numbers.astype("float64")
            unusable = ~absent & ~(typed[name].abs() <= LARGEST_USABLE)
            if unusable.any():
                row, value = _first(unusable, text)
                raise DataValidationError(
                    f"{origin}: column '{name}' has '{value}' (row {row}), which is not a "
                    f"finite number of at most {LARGEST_USABLE:g} in size"
                )
            if spec.bounds is not None:
                typed[name], clipped[name] = _bounded(
                    typed[name], text, name, spec.bounds, schema.out_of_bounds, origin
                )
    clean = pd.DataFrame(typed)

    target = schema.target.column
    seen = set(clean[target].dropna().unique())
    if not schema.classification and len(seen) < 2:
        raise DataValidationError(
            f"{origin}: target '{target}' has "
            + (f"the one value {next(iter(seen)):g} in every row" if seen else "no values")
            + "; there is nothing to regress on"
        )
    absent = [label for label in schema.target_labels if label not in seen]
    if absent:
        raise DataValidationError(
            f"{origin}: target '{target}' has no rows of class(es) {absent}; the model predicts "
            f"every class the schema lists ({list(schema.target_labels)}), so each needs rows"
        )

    features = clean[schema.feature_columns]
    missing_by_column = {c: int(n) for c, n in features.isna().sum().items() if n}
    incomplete = features.isna().any(axis=1)
    # A row without a label is useless for training whatever the policy.
    drop = clean[target].isna() | (incomplete if missing == "drop" else False)
    clean = clean.loc[~drop].reset_index(drop=True)
    if clean.empty:
        raise DataValidationError(f"{origin}: no rows left after dropping rows with missing values")
    report = ValidationReport(
        rows_in=len(frame),
        rows_out=len(clean),
        missing_policy=missing,
        rows_with_missing=int(incomplete.sum()),
        rows_dropped=int(drop.sum()),
        missing_by_column=missing_by_column,
        clipped_by_column={c: n for c, n in clipped.items() if n},
        columns_ignored=len(extra_cols),
    )
    return clean, report


def _bounded(
    numbers: pd.Series,
    text: pd.Series,
    name: str,
    bounds: tuple[float, float],
    policy: Literal["refuse", "clip"],
    origin: str,
) -> tuple[pd.Series, int]:
    """The column within the schema's bounds: refused, or clipped with a count, as the schema
    says. Privacy accounting and the model both rely on values staying inside them."""
    low, high = bounds
    outside = (numbers < low) | (numbers > high)  # NaN (missing) compares False
    if not outside.any():
        return numbers, 0
    if policy == "clip":
        return numbers.clip(low, high), int(outside.sum())
    row, value = _first(outside, text)
    more = int(outside.sum()) - 1
    raise DataValidationError(
        f"{origin}: column '{name}' has {value} (row {row}), outside its bounds "
        f"[{low:g}, {high:g}]"
        + (f", and {more} more row(s) do" if more else "")
        + "; fix the data, or set out_of_bounds: clip in the schema"
    )
