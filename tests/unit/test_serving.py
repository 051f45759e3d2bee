"""The server's core without HTTP: request formats to columns, columns checked against the ONNX
signature, predictions equal to the native pipeline's."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import onnxruntime
import pandas as pd
import pytest

from tests.conftest import mlflow_payloads
from trustflow.config import CandidateConfig, OnnxConfig, SplitConfig, TabularConfig
from trustflow.data.split import split_frame
from trustflow.data.validate import validate_frame
from trustflow.export.onnx import convert_pipeline
from trustflow.models.candidates import train_candidate
from trustflow.models.preprocess import features_and_target, fit_preprocessor
from trustflow.serving.app import FileSource
from trustflow.serving.protocol import (
    csv_columns,
    media_type,
    mlflow_columns,
    object_to_columns,
    parquet_columns,
    parse_json,
    predict_columns,
)
from trustflow.serving.scorer import ModelLoadError, ModelRelease, PayloadError, Scorer

SCHEMA = TabularConfig().data.dataset
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fitted(adult_sample: pd.DataFrame):
    frame, _ = validate_frame(adult_sample, SCHEMA, "impute", "sample")
    splits = split_frame(frame, "income", SplitConfig())
    features, target = features_and_target(splits.train, SCHEMA)
    cfg = CandidateConfig(name="lr", kind="logistic_regression")
    model = train_candidate(fit_preprocessor(splits.train, SCHEMA), features, target, cfg, 0)
    graph = convert_pipeline(model, SCHEMA, OnnxConfig(), "skl2onnx").SerializeToString()
    rows, _ = features_and_target(splits.test.head(40), SCHEMA)
    return model, Scorer(ModelRelease("lr", "1", "test", graph)), rows


def test_every_format_scores_like_the_native_pipeline(fitted) -> None:
    model, scorer, rows = fitted
    assert rows.isna().any().any()  # missing cells travel as null
    for name, payload in mlflow_payloads(rows).items():
        prediction = scorer.predict(*mlflow_columns(payload))
        assert np.array_equal(prediction.labels, model.predict(rows)), name
        assert np.abs(prediction.probabilities - model.predict_proba(rows)).max() < 1e-9, name
    numeric = {c for c, kind in scorer.columns.items() if kind == "number"}
    from_csv = scorer.predict(*csv_columns(rows.to_csv(index=False).encode(), numeric))
    assert np.array_equal(from_csv.labels, model.predict(rows))
    buffer = io.BytesIO()
    rows.to_parquet(buffer)
    from_parquet = scorer.predict(*parquet_columns(buffer.getvalue()))
    assert np.array_equal(from_parquet.labels, model.predict(rows))
    assert scorer.class_names(np.array([0, 1])) == ["<=50K", ">50K"]  # from the graph's metadata


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "exactly one of"),
        ({"inputs": {}, "instances": []}, "exactly one of"),
        ({"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}}, "row 0: expected a list of 1"),
        ({"dataframe_split": {"columns": ["a", "a"], "data": []}}, "names a column twice"),
        ({"dataframe_records": [3]}, "row 0: expected an object"),
        ({"inputs": {"a": [1], "b": [1, 2]}}, "same length"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_malformed_bodies_name_the_problem(payload, message) -> None:
    with pytest.raises(PayloadError, match=message) as caught:
        mlflow_columns(payload)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"inputs": [], "params": {"k": 1}}, "no inference parameters"),
        ({"inputs": [], "request_id": "r"}, "found ['inputs', 'request_id']"),
        ({"dataframe_records": [{"a": 1}, {"b": 1}]}, "row 1: missing column 'a'"),
        ({"dataframe_records": [{"a": 1}, {"a": 1, "b": 1}]}, "column 'b' is not in row 0"),
    ],
)
def test_strict_refuses_what_mlflow_ignores(payload, message) -> None:
    with pytest.raises(PayloadError, match=message.replace("[", r"\[")):
        mlflow_columns(payload, strict=True)
    mlflow_columns(payload)  # lenient: ignored or filled


def test_mlflow_shapes_as_columns() -> None:
    one = {"a": 1.0, "b": "x"}
    assert object_to_columns(one, "inputs") == ({"a": [1.0], "b": ["x"]}, 1)
    records = [{"a": 1.0, "b": "x"}, {"b": "y"}]  # a key absent from a record: missing there
    assert mlflow_columns({"dataframe_records": records}) == (
        {"a": [1.0, None], "b": ["x", "y"]},
        2,
    )
    split = {"columns": ["a", "b"], "data": []}
    assert mlflow_columns({"dataframe_split": split}) == ({"a": [], "b": []}, 0)
    assert mlflow_columns({"inputs": {"a": [1.0]}, "params": {"k": 1}, "id": 3}) == (
        {"a": [1.0]},
        1,
    )


@pytest.mark.parametrize(
    ("header", "status", "expected"),
    [
        (None, 200, "application/json"),
        ("text/csv; charset=UTF-8", 200, "text/csv"),
        ("application/vnd.apache.parquet", 200, "application/vnd.apache.parquet"),
        ("text/csv; charset=latin-1", 415, "UTF-8 only"),
        ("application/json; format=pandas-split", 415, "unknown parameter 'format'"),
        ("text/plain", 415, "send one of"),
    ],
)
def test_content_types(header, status, expected) -> None:
    if status == 200:
        assert media_type(header) == expected
        return
    with pytest.raises(PayloadError, match=expected) as caught:
        media_type(header)
    assert caught.value.status == 415


def test_json_bodies_clients_send_and_ones_nobody_should() -> None:
    assert math.isnan(parse_json(json.dumps({"a": math.nan}).encode())["a"])
    for body, message in [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        ('{"a": "Côte"}'.encode("latin-1"), "not UTF-8: byte 0xf4 at position 8"),
        (b"{", "not valid JSON"),
    ]:
        with pytest.raises(PayloadError, match=message):
            parse_json(body)


def test_predict_takes_records_only() -> None:
    assert predict_columns({"records": [{"a": 1}]}) == ({"a": [1]}, 1)
    with pytest.raises(PayloadError, match="records"):
        predict_columns({"dataframe_records": [{"a": 1}]})


def test_values_are_checked_against_the_graphs_signature(fitted) -> None:
    _, scorer, rows = fitted
    columns, count = mlflow_columns(mlflow_payloads(rows.head(3))["inputs"])
    breaks = {
        "missing column 'age'": {k: v for k, v in columns.items() if k != "age"},
        "column 'age' row 1: expected a number, got 'forty'": {**columns, "age": [1, "forty", 3]},
        "column 'age' row 2: expected a number, got True": {**columns, "age": [1, 2, True]},
        "column 'age' row 1: expected a finite number, got inf": {
            **columns, "age": [1, math.inf, 3]},
        "column 'sex' row 0: expected a string, got 1": {**columns, "sex": [1, "Male", "Male"]},
        "column 'sex' row 2: expected a string, got 0.5": {**columns, "sex": [None, "Male", 0.5]},
        "column 'race' has 2 values, not 3": {**columns, "race": ["White", "White"]},
    }  # fmt: skip
    for message, broken in breaks.items():
        with pytest.raises(PayloadError, match=message.replace("(", r"\(")):
            scorer.predict(broken, count)

    expected = scorer.predict(columns, count).labels
    # Lenient by default, as MLflow: numbers as strings converted, NaN as a missing string,
    # columns the model does not take dropped (and named).
    lenient = {**columns, "age": [str(v) for v in columns["age"]], "income": ["x"] * 3}
    lenient["sex"] = [math.nan, *columns["sex"][1:]]
    missing = {**columns, "sex": [None, *columns["sex"][1:]]}
    prediction = scorer.predict(lenient, count)
    assert prediction.dropped == ["income"]
    assert prediction.labels.tolist() == scorer.predict(missing, count).labels.tolist()
    assert scorer.predict({**columns, "income": ["x"] * 3}, count).labels.tolist() == (
        expected.tolist()
    )
    for message, broken in {
        "unknown column 'income'": {**columns, "income": ["x"] * 3},
        "column 'age' row 0: expected a number, got '": {k: lenient[k] for k in columns},
    }.items():
        with pytest.raises(PayloadError, match=message):
            scorer.predict(broken, count, strict=True)


def test_csv_cells_that_are_not_numbers_are_refused() -> None:
    with pytest.raises(PayloadError, match="column 'age' row 1: expected a number, got 'x'"):
        csv_columns(b"age,sex\n1,Male\nx,Female\n", {"age"})
    with pytest.raises(PayloadError, match="CSV line 2: 1 fields"):
        csv_columns(b"age,sex\n1\n", {"age"})
    with pytest.raises(PayloadError, match="not UTF-8: byte 0xf4"):
        csv_columns("age,country\n1,Côte\n".encode("latin-1"), {"age"})
    assert csv_columns(b"age,sex\n", {"age"}) == ({"age": [], "sex": []}, 0)
    missing = b"age,sex\nNA,null\n,Male\nnan,\n"  # what pandas (and MLflow) read as missing
    assert csv_columns(missing, {"age"}) == (
        {"age": [None, None, None], "sex": [None, "Male", None]},
        3,
    )
    with pytest.raises(PayloadError, match="not a Parquet file"):
        parquet_columns(b"PAR1 not really")


def test_file_source_sees_a_changed_file_as_a_new_release(fitted, tmp_path) -> None:
    _, scorer, _ = fitted
    path = tmp_path / "model.onnx"
    path.write_bytes(scorer.release.graph)
    source = FileSource(path)
    first = source.load()
    assert source.poll(first) is None
    path.write_bytes(scorer.release.graph)  # rewritten with the same bytes: the same release
    assert source.poll(first) is None
    path.write_bytes(scorer.release.graph + b"\n")  # other content: a new release
    changed = source.poll(first)
    assert changed is not None and changed.version != first.version
    with pytest.raises(ModelLoadError, match="cannot read the model"):
        FileSource(tmp_path / "absent.onnx").load()
    with pytest.raises(ModelLoadError, match="not a loadable ONNX model"):
        Scorer(ModelRelease("x", "1", str(path), b"not a graph"))


def test_cpu_and_gpu_runtimes_are_pinned_to_one_version() -> None:
    """`make install-gpu` swaps one for the other: the swap must not change the version."""
    pins = dict(
        line.split("==")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line.startswith("onnxruntime")
    )
    assert pins["onnxruntime"] == pins["onnxruntime-gpu"], pins
    assert onnxruntime.__version__ == pins["onnxruntime"]  # the CPU build or the GPU one


@pytest.mark.gpu
def test_cuda_provider_gives_the_cpu_predictions(fitted) -> None:
    available = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        pytest.skip(
            f"onnxruntime has no CUDAExecutionProvider here ({available}): run `make install-gpu` "
            "on a machine with an NVIDIA GPU to check the CUDA path"
        )
    _, cpu, rows = fitted
    gpu = Scorer(cpu.release, device="cuda")
    assert gpu.providers[0] == "CUDAExecutionProvider"
    columns, count = mlflow_columns(mlflow_payloads(rows)["inputs"])
    on_gpu, on_cpu = gpu.predict(columns, count), cpu.predict(columns, count)
    assert np.array_equal(on_gpu.labels, on_cpu.labels)
    assert np.abs(on_gpu.probabilities - on_cpu.probabilities).max() < 1e-5
