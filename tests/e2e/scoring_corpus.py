"""The requests the differential test sends to `mlflow models serve` and to `trustflow serve`:
every request shape MLflow 3.17's scoring server accepts (read off
``mlflow/pyfunc/scoring_server/__init__.py`` and ``mlflow/utils/proto_json_utils.py``), and the
malformed, mistyped, empty, huge and hostile ones a server meets in the wild.

Each case is raw bytes and headers, so both servers get byte-identical requests.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

JSON = "application/json"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes
    content_type: str | None = JSON
    headers: dict[str, str] = field(default_factory=dict)
    # The rows a server that accepts the body scores (None: no fixed expectation).
    expected_rows: pd.DataFrame | None = field(default=None, compare=False)

    def request_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.content_type is not None:
            headers["Content-Type"] = self.content_type
        return headers


def _dumps(payload: Any) -> bytes:
    # Python's json writes NaN/Infinity literals, as MLflow's own client does.
    return json.dumps(payload).encode()


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Records with missing cells as NaN (numbers) and None (strings), as pandas holds them."""
    out = []
    for record in frame.to_dict(orient="records"):
        out.append({k: (None if pd.isna(v) else v) for k, v in record.items()})
    return out


def _with_nan(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What MLflow's client sends for a frame with missing cells: NaN, in every column kind."""
    return [{k: (math.nan if v is None else v) for k, v in r.items()} for r in records]


def build_corpus(rows: pd.DataFrame, label: str) -> list[Case]:
    """``rows``: feature columns as a client holds them (some cells missing); ``label``: the
    target column's name (a client may send it along)."""
    head = rows.head(20).reset_index(drop=True)
    records = _records(head)
    one = records[0]
    numbers = [c for c in rows.columns if pd.api.types.is_numeric_dtype(rows[c])]
    texts = [c for c in rows.columns if c not in numbers]
    number, text = numbers[0], texts[0]
    split = json.loads(head.to_json(orient="split"))
    split_no_index = {k: v for k, v in split.items() if k != "index"}
    columns = {c: [r[c] for r in records] for c in head.columns}

    def case(name: str, payload: Any, frame: pd.DataFrame | None = head, **kw: Any) -> Case:
        return Case(name, _dumps(payload), expected_rows=frame, **kw)

    def changed(column: str, value: Any) -> list[dict[str, Any]]:
        return [{**one, column: value}, *records[1:3]]

    big = pd.concat([rows] * (10_000 // len(rows) + 1), ignore_index=True).head(10_000)
    frame_one = head.head(1)
    frame_three = head.head(3)
    parquet = io.BytesIO()
    head.to_parquet(parquet)
    csv_text = head.to_csv(index=False)
    header_line, first_line, rest = csv_text.split("\n", 2)
    assert header_line.startswith(number + ",")
    csv_word = "\n".join([header_line, "forty," + first_line.split(",", 1)[1], rest])
    cells = first_line.split(",")
    csv_na = "\n".join([header_line, ",".join(["NA", "null", *cells[2:]]), rest])
    absent = [dict(records[0]), {k: v for k, v in records[1].items() if k != number}]
    absent_frame = head.head(2).copy()
    absent_frame.loc[1, number] = math.nan
    deep = b"[" * 100_000 + b"]" * 100_000
    deep_value = {"dataframe_records": [{**one, text: json.loads("[" * 50 + "]" * 50)}]}

    corpus = [
        # Every accepted shape, each scoring the same rows.
        case("split with index", {"dataframe_split": split}),
        case("split without index", {"dataframe_split": split_no_index}),
        case("records", {"dataframe_records": records}),
        case("instances: records", {"instances": records}),
        case("inputs: records", {"inputs": records}),
        case("inputs: columns", {"inputs": columns}),
        case("instances: columns", {"instances": columns}),
        case("inputs: one record of scalars", {"inputs": one}, frame_one),
        case("instances: one record of scalars", {"instances": one}, frame_one),
        case("records: NaN for missing (MLflow's client)",
             {"dataframe_records": _with_nan(records)}),
        case("split: NaN for missing", {"dataframe_split": {**split, "data": [
            [math.nan if v is None else v for v in row] for row in split["data"]]}}),
        case("params alongside the data", {"dataframe_split": split, "params": {"k": 1}}),
        case("empty params", {"dataframe_split": split, "params": {}}),
        case("an extra top-level key", {"dataframe_split": split, "request_id": "r-1"}),
        case("a column the model does not use", {"dataframe_records": [
            {**r, "salary": 1.0} for r in records]}),
        case("the label column sent along", {"dataframe_records": [
            {**r, label: "<=50K"} for r in records]}),
        case("a key absent in some records", {"dataframe_records": absent}, absent_frame),
        case("numbers as strings", {"dataframe_records": [
            {**r, number: str(r[number])} for r in records[:3]]}, frame_three),
        case("integers for numbers", {"dataframe_records": [
            {**r, number: int(r[number])} for r in records[:3]]}, frame_three),
        case("columns in another order", {"dataframe_records": [
            dict(reversed(list(r.items()))) for r in records]}),
        case("unicode text", {"dataframe_records": changed(text, "Côte d'Ivoire")},
             frame_three.assign(**{text: ["Côte d'Ivoire", *frame_three[text][1:]]})),
        case("empty string", {"dataframe_records": changed(text, "")}, None),
        case("a very long string", {"dataframe_records": changed(text, "x" * 100_000)}, None),
        case("a huge finite number", {"dataframe_records": changed(number, 1e300)}, None),
        case("a negative number", {"dataframe_records": changed(number, -5.0)}, None),
        case("null number", {"dataframe_records": changed(number, None)}, None),
        case("null text", {"dataframe_records": changed(text, None)}, None),
        Case("json with charset=utf-8", _dumps({"dataframe_split": split}),
             f"{JSON}; charset=utf-8", expected_rows=head),
        Case("json with charset=UTF-8", _dumps({"dataframe_split": split}),
             f"{JSON}; charset=UTF-8", expected_rows=head),
        Case("csv", csv_text.encode(), CSV, expected_rows=head),
        Case("csv with charset=utf-8", csv_text.encode(), f"{CSV}; charset=utf-8",
             expected_rows=head),
        Case("csv with an index column", head.to_csv().encode(), CSV),
        Case("csv with a column the model does not use",
             head.assign(salary=1.0).to_csv(index=False).encode(), CSV, expected_rows=head),
        Case("parquet", parquet.getvalue(), PARQUET, expected_rows=head),
        Case("10,000 rows (split)", _dumps({"dataframe_split": json.loads(
            big.to_json(orient="split"))}), expected_rows=big),
        Case("10,000 rows (csv)", big.to_csv(index=False).encode(), CSV, expected_rows=big),
        # Empty inputs.
        case("empty split", {"dataframe_split": {"columns": list(head.columns), "data": []}},
             None),
        case("empty records", {"dataframe_records": []}, None),
        case("empty inputs object", {"inputs": {}}, None),
        case("empty inputs list", {"inputs": []}, None),
        Case("csv: header only", (",".join(head.columns) + "\n").encode(), CSV),
        Case("empty body (json)", b""),
        Case("empty body (csv)", b"", CSV),
        # Values the model cannot take as they are.
        case("Infinity in a number column", {"dataframe_records": changed(number, math.inf)},
             None),
        case("-Infinity in a number column", {"dataframe_records": changed(number, -math.inf)},
             None),
        Case("1e400 in a number column", json.dumps({"dataframe_records": [one]}).replace(
            json.dumps(one[number]), "1e400", 1).encode()),
        case("a word in a number column", {"dataframe_records": changed(number, "forty")}, None),
        case("a bool in a number column", {"dataframe_records": changed(number, True)}, None),
        case("a number in a text column", {"dataframe_records": changed(text, 7)}, None),
        case("a bool in a text column", {"dataframe_records": changed(text, False)}, None),
        case("an object as a value", {"dataframe_records": changed(number, {"v": 1})}, None),
        case("a list as a value", {"dataframe_records": changed(text, ["a", "b"])}, None),
        case("a needed column missing", {"dataframe_records": [
            {k: v for k, v in r.items() if k != number} for r in records]}, None),
        Case("latin-1 csv", csv_text.replace(str(one[text]), "Côte", 1).encode("latin-1"), CSV),
        Case("latin-1 json", json.dumps({"dataframe_records": changed(text, "Côte")},
             ensure_ascii=False).encode("latin-1")),
        Case("csv with charset=latin-1", csv_text.encode("latin-1"), f"{CSV}; charset=latin-1"),
        Case("json with charset=utf-16", _dumps({"dataframe_split": split}),
             f"{JSON}; charset=utf-16"),
        Case("an unknown content-type parameter", _dumps({"dataframe_split": split}),
             f"{JSON}; format=pandas-split"),
        Case("csv: a word in a number column", csv_word.encode(), CSV),
        Case("csv: NA and null cells", csv_na.encode(), CSV),
        Case("csv: ragged rows", (csv_text + "1,2\n").encode(), CSV),
        # Malformed bodies.
        Case("truncated json", _dumps({"dataframe_split": split})[:-5]),
        Case("not json at all", b"hello"),
        Case("a json list", _dumps(records)),
        Case("a json string", _dumps("rows")),
        Case("a json number", b"42"),
        case("no format key", {"data": records}, None),
        case("two format keys", {"dataframe_records": records, "inputs": records}, None),
        case("split without data", {"dataframe_split": {"columns": list(head.columns)}}, None),
        case("split data not a list", {"dataframe_split": {"columns": ["a"], "data": 3}}, None),
        case("split row of the wrong length", {"dataframe_split": {
            **split_no_index, "data": [split["data"][0][:-1]]}}, None),
        case("split as a list", {"dataframe_split": split["data"]}, None),
        case("records: a row that is not an object", {"dataframe_records": [one, 3]}, None),
        case("records: not a list", {"dataframe_records": "rows"}, None),
        case("inputs: columns of different lengths", {"inputs": {
            **columns, number: columns[number][:2]}}, None),
        case("inputs: a scalar", {"inputs": 3}, None),
        Case("deeply nested json", deep),
        case("a deeply nested value", deep_value, None),
        # Wrong content types.
        Case("text/plain", _dumps({"dataframe_split": split}), "text/plain"),
        Case("no content type", _dumps({"dataframe_split": split}), None),
        Case("form-urlencoded", b"a=1", "application/x-www-form-urlencoded"),
        Case("parquet that is not parquet", b"PAR1 not really", PARQUET),
        Case("json sent as csv", _dumps({"dataframe_split": split}), CSV),
    ]  # fmt: skip
    return corpus
