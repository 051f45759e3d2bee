"""The server's core without HTTP: request formats to columns, columns checked against the ONNX
signature, predictions equal to the native pipeline's."""

from __future__ import annotations

import numpy as np
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
from trustflow.serving.protocol import mlflow_columns, predict_columns
from trustflow.serving.scorer import ModelLoadError, ModelRelease, PayloadError, Scorer, csv_columns

SCHEMA = TabularConfig().data.dataset


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
        labels, probabilities = scorer.predict(*mlflow_columns(payload))
        assert np.array_equal(labels, model.predict(rows)), name
        assert np.abs(probabilities - model.predict_proba(rows)).max() < 1e-9, name
    numeric = {c for c, kind in scorer.columns.items() if kind == "number"}
    labels, _ = scorer.predict(*csv_columns(rows.to_csv(index=False), numeric))
    assert np.array_equal(labels, model.predict(rows))
    assert scorer.class_names(np.array([0, 1])) == ["<=50K", ">50K"]  # from the graph's metadata


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "exactly one of"),
        ({"inputs": {}, "instances": []}, "exactly one of"),
        ({"inputs": [], "params": {"k": 1}}, "no inference parameters"),
        ({"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}}, "row 0: expected a list of 1"),
        ({"dataframe_split": {"columns": ["a", "a"], "data": []}}, "names a column twice"),
        ({"dataframe_records": [{"a": 1}, {"b": 1}]}, "row 1: missing column 'a'"),
        ({"dataframe_records": [{"a": 1}, {"a": 1, "b": 1}]}, "column 'b' is not in row 0"),
        ({"dataframe_records": [3]}, "row 0: expected an object"),
        ({"inputs": {"a": [1], "b": [1, 2]}}, "same length"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_malformed_bodies_name_the_problem(payload, message) -> None:
    with pytest.raises(PayloadError, match=message) as caught:
        mlflow_columns(payload)
    assert caught.value.status == 400


def test_predict_takes_records_only() -> None:
    assert predict_columns({"records": [{"a": 1}]}) == ({"a": [1]}, 1)
    with pytest.raises(PayloadError, match="records"):
        predict_columns({"dataframe_records": [{"a": 1}]})


def test_values_are_checked_against_the_graphs_signature(fitted) -> None:
    _, scorer, rows = fitted
    columns, count = mlflow_columns(mlflow_payloads(rows.head(3))["inputs"])
    breaks = {
        "unknown column 'extra'": {**columns, "extra": [1, 2, 3]},
        "missing column 'age'": {k: v for k, v in columns.items() if k != "age"},
        "column 'age' row 1: expected a number, got '40'": {**columns, "age": [1, "40", 3]},
        "column 'age' row 2: expected a number, got True": {**columns, "age": [1, 2, True]},
        "column 'sex' row 0: expected a string, got 1": {**columns, "sex": [1, "Male", "Male"]},
        "column 'race' has 2 values, not 3": {**columns, "race": ["White", "White"]},
    }
    for message, broken in breaks.items():
        with pytest.raises(PayloadError, match=message.replace("(", r"\(")):
            scorer.predict(broken, count)


def test_csv_cells_that_are_not_numbers_are_refused() -> None:
    with pytest.raises(PayloadError, match="column 'age' row 1: expected a number, got 'x'"):
        csv_columns("age,sex\n1,Male\nx,Female\n", {"age"})
    with pytest.raises(PayloadError, match="CSV line 2: 1 fields"):
        csv_columns("age,sex\n1\n", {"age"})


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
