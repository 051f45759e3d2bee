"""Request bodies as columns: MLflow's scoring protocol and trustflow's ``/v1/predict``.

MLflow's ``/invocations`` (as ``mlflow models serve`` in MLflow 3.17 answers it) takes:

- JSON (``application/json``) with one of ``dataframe_split`` ({columns, data[, index]}),
  ``dataframe_records`` ([{column: value}]), ``instances`` or ``inputs`` (records, an object of
  columns, or one record of scalars), and optionally ``params``;
- CSV (``text/csv``, a header row first) or Parquet (``application/vnd.apache.parquet``);
- UTF-8 only: a ``charset`` other than utf-8, or any other content-type parameter, is a 415.

It answers ``{"predictions": [...]}``; errors are ``{"error_code", "message"}``.

By default the server is as lenient as MLflow where that loses nothing: other top-level keys and
``params`` are ignored, a key absent from some records is a missing cell, and numbers sent as
strings are converted. ``strict`` refuses all of those instead.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import orjson

from trustflow.serving.scorer import PayloadError

MLFLOW_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
JSON, CSV, PARQUET = "application/json", "text/csv", "application/vnd.apache.parquet"
MEDIA_TYPES = (JSON, CSV, PARQUET)

Columns = dict[str, list[Any]]


def media_type(header: str | None) -> str:
    """The body's media type from its Content-Type header (JSON when there is none)."""
    if not header:
        return JSON
    mime, *parameters = (part.strip() for part in header.split(";"))
    mime = mime.lower()
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        name, value = name.strip().lower(), value.strip().strip('"').lower()
        if name != "charset":
            raise PayloadError(415, f"content type '{header}': unknown parameter '{name}'")
        if value != "utf-8":
            raise PayloadError(415, f"content type '{header}': the server reads UTF-8 only")
    if mime not in MEDIA_TYPES:
        raise PayloadError(415, f"content type '{header}': send one of {', '.join(MEDIA_TYPES)}")
    return mime


def _utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(
            400,
            f"the body is not UTF-8: byte 0x{body[exc.start]:02x} at position {exc.start} "
            "(send UTF-8 text)",
        ) from None


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    # Python's json reads what orjson refuses but clients send: NaN for a missing number (as
    # MLflow's client writes it), Infinity (refused later, naming the cell), and nesting
    # deeper than orjson's limit (refused here).
    text = _utf8(body)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise PayloadError(400, f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise PayloadError(400, "the body is not valid JSON: it is nested too deeply") from None


def records_to_columns(records: Any, field: str, strict: bool = False) -> tuple[Columns, int]:
    """Records as columns. A key absent from some records is a missing cell there (unless
    ``strict``, which wants the same keys in every record)."""
    if not isinstance(records, list):
        raise PayloadError(400, f"'{field}' must be a list of records (objects)")
    for row, record in enumerate(records):
        if not isinstance(record, dict):
            raise PayloadError(400, f"'{field}' row {row}: expected an object, got {record!r}")
    if not records:
        return {}, 0
    first = records[0].keys()
    ragged = next((row for row, r in enumerate(records) if r.keys() != first), None)
    if ragged is None:  # the common case: one pass per column
        return {name: [r[name] for r in records] for name in first}, len(records)
    if strict:
        record = records[ragged]
        missing = [name for name in first if name not in record]
        problem = (
            f"missing column '{missing[0]}'"
            if missing
            else f"column '{next(n for n in record if n not in first)}' is not in row 0"
        )
        raise PayloadError(400, f"'{field}' row {ragged}: {problem}")
    names = dict.fromkeys(name for record in records for name in record)
    return {name: [r.get(name) for r in records] for name in names}, len(records)


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
    if not data:
        return {name: [] for name in names}, 0
    # Transposed by zip (C speed): this is the hot path for batches.
    return dict(zip(names, map(list, zip(*data, strict=True)), strict=True)), len(data)


def object_to_columns(value: Any, field: str, strict: bool = False) -> tuple[Columns, int]:
    """``instances``/``inputs``: records, an object mapping each column to its values, or one
    record given as an object of scalars."""
    if isinstance(value, list):
        return records_to_columns(value, field, strict)
    if not isinstance(value, dict):
        raise PayloadError(400, f"'{field}' must be a list of records or an object of columns")
    if value and not any(isinstance(v, list) for v in value.values()):
        return {name: [cell] for name, cell in value.items()}, 1
    lengths = {len(v) if isinstance(v, list) else -1 for v in value.values()}
    if -1 in lengths or len(lengths) > 1:
        raise PayloadError(400, f"'{field}': every column must be a list of the same length")
    return dict(value), lengths.pop() if lengths else 0


def mlflow_columns(payload: Any, strict: bool = False) -> tuple[Columns, int]:
    if not isinstance(payload, dict):
        raise PayloadError(400, f"the body must be a JSON object with one of {list(MLFLOW_KEYS)}")
    keys = [key for key in MLFLOW_KEYS if key in payload]
    others = [key for key in payload if key not in MLFLOW_KEYS and key != "params"]
    if len(keys) != 1 or (strict and others):
        found = keys + others
        raise PayloadError(
            400,
            f"the body needs exactly one of {list(MLFLOW_KEYS)}; found {found or 'none'}",
        )
    if strict and payload.get("params"):
        raise PayloadError(400, "'params': this model takes no inference parameters")
    key = keys[0]
    if key == "dataframe_split":
        return split_to_columns(payload[key])
    if key == "dataframe_records":
        return records_to_columns(payload[key], key, strict)
    return object_to_columns(payload[key], key, strict)


def predict_columns(payload: Any, strict: bool = False) -> tuple[Columns, int]:
    """``/v1/predict``: ``{"records": [{column: value}, ...]}``."""
    if not isinstance(payload, dict) or set(payload) != {"records"}:
        raise PayloadError(400, 'the body must be {"records": [{column: value, ...}, ...]}')
    return records_to_columns(payload["records"], "records", strict)


# The cells pandas.read_csv (so MLflow's server) reads as missing, in every column.
CSV_MISSING = frozenset(
    ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")
)  # fmt: skip


def csv_columns(body: bytes, numeric: set[str]) -> tuple[Columns, int]:
    """A CSV body (header row first) as columns; cells of ``numeric`` columns parsed as
    numbers; an empty cell, or one pandas reads as missing ("NA", "null", ...), is missing. A
    line with more or fewer fields than the header is refused (pandas would fill a short one
    with missing cells: usually a broken line)."""
    reader = csv.reader(io.StringIO(_utf8(body), newline=""))
    header = next(reader, None)
    if not header:
        raise PayloadError(400, "CSV body is empty: expected a header row and data rows")
    if len(set(header)) != len(header):
        raise PayloadError(400, "the CSV header names a column twice")
    cells: list[list[str]] = []
    for line, record in enumerate(reader, start=2):
        if not record:
            continue
        if len(record) != len(header):
            raise PayloadError(
                400, f"CSV line {line}: {len(record)} fields, the header has {len(header)}"
            )
        cells.append(record)
    if not cells:
        return {name: [] for name in header}, 0
    columns: Columns = {}
    for name, values in zip(header, zip(*cells, strict=True), strict=True):
        if name not in numeric:
            columns[name] = [None if cell in CSV_MISSING else cell for cell in values]
            continue
        parsed: list[Any] = []
        for row, cell in enumerate(values):
            try:
                parsed.append(None if cell.strip() in CSV_MISSING else float(cell))
            except ValueError:
                raise PayloadError(
                    400, f"column '{name}' row {row}: expected a number, got {cell!r}"
                ) from None
        columns[name] = parsed
    return columns, len(cells)


def parquet_columns(body: bytes) -> tuple[Columns, int]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # the container image leaves it out: it is most of the image's size
        raise PayloadError(
            415, "Parquet bodies need pyarrow, which this server does not have; send JSON or CSV"
        ) from None
    try:
        table = pq.read_table(io.BytesIO(body))
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise PayloadError(400, f"the body is not a Parquet file: {exc}") from None
    columns = {
        name: values
        for name, values in table.to_pydict().items()
        if not name.startswith("__index_level_")  # pandas' index, kept as a column
    }
    return columns, table.num_rows


def request_columns(
    endpoint: str, content_type: str | None, body: bytes, numeric: set[str], strict: bool
) -> tuple[Columns, int]:
    """A scoring request's body as (columns, rows). ``numeric``: the model's number columns
    (CSV cells are text until the signature says otherwise)."""
    mime = media_type(content_type)
    if endpoint == "predict":
        if mime != JSON:
            raise PayloadError(415, f"content type '{content_type}': /v1/predict takes {JSON}")
        return predict_columns(parse_json(body), strict)
    if mime == CSV:
        return csv_columns(body, numeric)
    if mime == PARQUET:
        return parquet_columns(body)
    return mlflow_columns(parse_json(body), strict)
