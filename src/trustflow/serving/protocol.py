"""Request bodies as columns: MLflow's scoring protocol and trustflow's ``/v1/predict``.

MLflow's ``/invocations`` takes one of ``dataframe_split`` ({columns, data[, index]}),
``dataframe_records`` ([{column: value}]), ``instances`` or ``inputs`` (records, or an object of
columns), and answers ``{"predictions": [...]}``; errors are ``{"error_code", "message"}``.
"""

from __future__ import annotations

from typing import Any

from trustflow.serving.scorer import PayloadError

MLFLOW_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")

Columns = dict[str, list[Any]]


def records_to_columns(records: Any, field: str) -> tuple[Columns, int]:
    if not isinstance(records, list):
        raise PayloadError(400, f"'{field}' must be a list of records (objects)")
    columns: Columns = {}
    for row, record in enumerate(records):
        if not isinstance(record, dict):
            raise PayloadError(400, f"'{field}' row {row}: expected an object, got {record!r}")
        if row and record.keys() != columns.keys():
            missing = [name for name in columns if name not in record]
            extra = [name for name in record if name not in columns]
            problem = (
                f"missing column '{missing[0]}'"
                if missing
                else f"column '{extra[0]}' is not in row 0"
            )
            raise PayloadError(400, f"'{field}' row {row}: {problem}")
        for name, value in record.items():
            columns.setdefault(name, []).append(value)
    return columns, len(records)


def split_to_columns(split: Any) -> tuple[Columns, int]:
    if not isinstance(split, dict) or not isinstance(split.get("columns"), list):
        raise PayloadError(400, "'dataframe_split' must be an object with 'columns' and 'data'")
    names, data = split["columns"], split.get("data")
    if not isinstance(data, list):
        raise PayloadError(400, "'dataframe_split.data' must be a list of rows")
    if len(set(names)) != len(names):
        raise PayloadError(400, "'dataframe_split.columns' names a column twice")
    width = len(names)
    for row, values in enumerate(data):
        if type(values) is not list or len(values) != width:
            raise PayloadError(
                400, f"'dataframe_split.data' row {row}: expected a list of {width} values"
            )
    # Transposed by zip (C speed): this is the hot path for batches.
    columns: Columns = dict(zip(names, map(list, zip(*data, strict=True)), strict=True))
    if not data:
        columns = {name: [] for name in names}
    return columns, len(data)


def object_to_columns(value: Any, field: str) -> tuple[Columns, int]:
    """``instances``/``inputs``: records, or an object mapping each column to its values."""
    if isinstance(value, list):
        return records_to_columns(value, field)
    if isinstance(value, dict):
        lengths = {len(v) if isinstance(v, list) else -1 for v in value.values()}
        if -1 in lengths or len(lengths) > 1:
            raise PayloadError(400, f"'{field}': every column must be a list of the same length")
        return dict(value), lengths.pop() if lengths else 0
    raise PayloadError(400, f"'{field}' must be a list of records or an object of columns")


def mlflow_columns(payload: Any) -> tuple[Columns, int]:
    if not isinstance(payload, dict):
        raise PayloadError(400, f"the body must be a JSON object with one of {list(MLFLOW_KEYS)}")
    keys = [key for key in MLFLOW_KEYS if key in payload]
    others = [key for key in payload if key not in MLFLOW_KEYS and key != "params"]
    if len(keys) != 1 or others:
        found = keys + others
        raise PayloadError(
            400,
            f"the body needs exactly one of {list(MLFLOW_KEYS)}; found {found or 'none'}",
        )
    if payload.get("params"):
        raise PayloadError(400, "'params': this model takes no inference parameters")
    key = keys[0]
    if key == "dataframe_split":
        return split_to_columns(payload[key])
    if key == "dataframe_records":
        return records_to_columns(payload[key], key)
    return object_to_columns(payload[key], key)


def predict_columns(payload: Any) -> tuple[Columns, int]:
    """``/v1/predict``: ``{"records": [{column: value}, ...]}``."""
    if not isinstance(payload, dict) or set(payload) != {"records"}:
        raise PayloadError(400, 'the body must be {"records": [{column: value, ...}, ...]}')
    return records_to_columns(payload["records"], "records")
