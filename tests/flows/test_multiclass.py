"""A multiclass table end to end: `trustflow run` on the bundled Iris data with nothing else set
registers a gated, parity-checked model that the inference server scores by class name; bad
multiclass input is one line, exit 1, and nothing registered."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.conftest import set_cell, write_csv
from tests.e2e.processes import pointed_at
from tests.flows.helpers import client_for, fails_in_one_line, registry_and_data, run_cli
from trustflow.data.sources import load_source
from trustflow.serving.app import ModelRelease
from trustflow.serving.scorer import Scorer

IRIS = ("--set", "data.source=bundled:iris", "--set", "data.dataset=bundled:iris")
LABELS = ["setosa", "versicolor", "virginica"]


def test_iris_registers_a_gated_parity_checked_model_served_by_class_name(tmp_path, capsys) -> None:
    ws = tmp_path / "ws"
    code, summary, err = run_cli(capsys, "--workspace", str(ws), *IRIS)
    assert code == 0, err
    assert summary["model"]["name"] == "iris" and summary["model"]["alias"] == "champion"
    assert set(summary["candidates"]) == {"logreg", "hgb", "ebm", "mlp"}
    assert set(summary["metrics"]) == {"roc_auc", "accuracy", "f1", "log_loss", "f1_weighted"}
    assert summary["metrics"]["accuracy"] >= 0.85  # 30 test rows; chance is 1/3
    assert summary["onnx"]["passed"] and summary["onnx"]["max_abs_diff"] < 1e-4
    assert summary["fairness"] == {}
    assert summary["notes"] == [
        "candidate 'hgb-fair' left out: threshold_optimizer cannot learn a multiclass target",
        "no fairness audit: data set 'iris' declares no sensitive feature and fairness.features "
        "is not set",
    ]

    client = client_for(ws)
    version = client.get_model_version("iris", "1")
    assert version.tags["trustflow.onnx.parity_passed"] == "true"
    run = client.get_run(summary["mlflow"]["run_id"])  # the pipeline's run
    assert run.data.tags["trustflow.left_out.hgb-fair"].startswith("candidate 'hgb-fair'")
    assert client.get_experiment(run.info.experiment_id).name == "iris"
    card = next((ws / "mlartifacts").rglob("iris-v1.md")).read_text()
    assert "Predicts which of the 3 classes of `species` (`setosa`, `versicolor`, " in card
    assert "No fairness audit: data set `iris` declares no sensitive feature" in card

    with pointed_at(f"sqlite:///{ws / 'mlflow.db'}"):
        graph = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri="models:/iris@champion/model.onnx", dst_path=str(tmp_path)
            )
        ).read_bytes()
    scorer = Scorer(ModelRelease("iris", "1", "models:/iris/1", graph))
    assert scorer.classes == LABELS
    rows = load_source("bundled:iris").frame
    columns = {name: rows[name].tolist() for name in scorer.columns}
    prediction = scorer.predict(columns, len(rows))
    assert prediction.probabilities.shape == (150, 3)
    np.testing.assert_allclose(prediction.probabilities.sum(axis=1), 1.0, atol=1e-5)
    named = scorer.class_names(prediction.labels)
    assert np.mean(np.array(named) == rows["species"].to_numpy()) >= 0.9


# case -> (how to break the Iris rows, what the one line must say)
DATA_CASES = {
    "class-missing": (
        lambda f: f[f["species"] != "virginica"],
        "target 'species' has no rows of class(es) ['virginica']",
    ),
    "class-with-one-row": (
        lambda f: pd.concat([f[f["species"] != "virginica"], f[f["species"] == "virginica"][:1]]),
        "class 'virginica' of the target has 1 row(s); each class needs at least 3",
    ),
    "class-not-in-schema": (set_cell("species", 4, "daisy"), "unknown category 'daisy' (row 5)"),
    "text-in-a-measurement": (
        set_cell("petal_length", 7, "long"),
        "column 'petal_length' expects numbers",
    ),
    "outside-the-bounds": (set_cell("sepal_width", 3, "12"), "outside its bounds [0, 10]"),
    "too-few-rows": (
        lambda f: f.groupby("species").head(3),
        "9 rows are too few for the split",
    ),
}


@pytest.fixture(scope="module")
def iris_workspace(tmp_path_factory) -> Path:
    """A workspace whose iris champion is v1, from a run on the bundled rows."""
    from flows.tabular import run_pipeline
    from trustflow.config import load_config
    from trustflow.workspace import Workspace

    root = tmp_path_factory.mktemp("iris")
    one = "train.candidates=[{name: logreg, kind: logistic_regression}]"
    config = load_config(None, ["data.source=bundled:iris", "data.dataset=bundled:iris", one])
    assert run_pipeline(config, Workspace(root=root)).is_completed()
    return root


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_multiclass_data_fails_cleanly(case, iris_workspace, tmp_path, capsys) -> None:
    change, expected = DATA_CASES[case]
    before = registry_and_data(iris_workspace, "iris")
    source = write_csv(change(load_source("bundled:iris").frame), tmp_path / f"{case}.csv")
    error = fails_in_one_line(
        capsys, iris_workspace, "--set", f"data.source=csv:{source}",
        "--set", "data.dataset=bundled:iris",
    )  # fmt: skip
    assert expected in error
    assert (
        registry_and_data(iris_workspace, "iris") == before
    )  # nothing registered, the data as it was


SCHEMA = (
    "name: iris\ncolumns:\n  x: {kind: numeric, bounds: [0, 10]}\n"
    "  species: {kind: categorical, categories: %s}\ntarget: {column: species%s}\n"
)
CONFIG_CASES = {
    "multiclass-of-two": (
        SCHEMA % ("[a, b]", ", task: multiclass"),
        "target 'species' (task: multiclass) needs three or more categories",
    ),
    "multiclass-with-positive": (
        SCHEMA % ("[a, b, c]", ", task: multiclass, positive: a"),
        "and no positive class, got ['a', 'b', 'c'] and positive 'a'",
    ),
    "binary-of-three": (
        SCHEMA % ("[a, b, c]", ", positive: a"),
        "for more, set target.task: multiclass",
    ),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_a_wrong_task_in_the_schema_fails_before_any_work(
    case, iris_workspace, tmp_path, capsys
) -> None:
    text, expected = CONFIG_CASES[case]
    schema = tmp_path / "schema.yaml"
    schema.write_text(text)
    before = registry_and_data(iris_workspace, "iris")
    error = fails_in_one_line(capsys, iris_workspace, "--set", f"data.dataset={schema}")
    assert expected in error and str(schema) in error
    assert registry_and_data(iris_workspace, "iris") == before


def test_encryption_of_a_multiclass_model_is_refused(iris_workspace, capsys) -> None:
    before = registry_and_data(iris_workspace, "iris")
    error = fails_in_one_line(capsys, iris_workspace, *IRIS, "--set", "encryption.enabled=true")
    assert (
        "encryption.enabled serves a binary target's linear model (one sigmoid); data set "
        "'iris' is multiclass" in error
    )
    assert registry_and_data(iris_workspace, "iris") == before


def test_candidates_naming_an_unknown_one_is_one_line(iris_workspace, capsys) -> None:
    before = registry_and_data(iris_workspace, "iris")
    error = fails_in_one_line(capsys, iris_workspace, *IRIS, "--candidates", "logreg,svm")
    assert error == (
        "--candidates: no candidate named 'svm'; train.candidates has logreg, hgb, ebm, "
        "hgb-fair, mlp"
    )
    assert registry_and_data(iris_workspace, "iris") == before
