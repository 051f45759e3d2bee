"""A regression table end to end: `trustflow run` on the bundled diabetes data with nothing else
set registers a gated, parity-checked regressor that the inference server answers with values;
its fairness audit by group (MAE ratio); bad regression input is one line, exit 1, and nothing
registered."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
from sklearn.metrics import r2_score

from tests.conftest import set_cell, write_csv
from tests.e2e.processes import pointed_at
from tests.e2e.serving import serving
from tests.flows.helpers import champion, fails_in_one_line, registry_and_data, run_cli
from trustflow.data.sources import load_source
from trustflow.serving.app import ModelRelease
from trustflow.serving.scorer import Scorer

DIABETES = ("--set", "data.source=bundled:diabetes", "--set", "data.dataset=bundled:diabetes")


def test_diabetes_registers_a_gated_parity_checked_regressor_served_by_value(
    tmp_path, capsys
) -> None:
    ws = tmp_path / "ws"
    code, summary, err = run_cli(capsys, "--workspace", str(ws), *DIABETES)
    assert code == 0, err
    assert summary["model"]["name"] == "diabetes" and summary["model"]["alias"] == "champion"
    assert set(summary["candidates"]) == {"ridge", "hgb", "ebm", "mlp"}
    assert set(summary["metrics"]) == {"rmse", "mae", "r2"}
    assert summary["metrics"]["r2"] > 0.3 and summary["metrics"]["rmse"] < 65
    best = summary["model"]["candidate"]
    assert summary["gates"][best] == "passed" and summary["onnx"]["passed"]
    assert summary["fairness"] == {}
    assert summary["notes"] == [
        "no fairness audit: data set 'diabetes' declares no sensitive feature and "
        "fairness.features is not set",
    ]
    card = next((ws / "mlartifacts").rglob("diabetes-v1.md")).read_text()
    assert "Predicts the value of `progression`" in card and "| rmse (selection metric) |" in card

    with pointed_at(f"sqlite:///{ws / 'mlflow.db'}"):
        graph = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri="models:/diabetes@champion/model.onnx", dst_path=str(tmp_path)
            )
        ).read_bytes()
    scorer = Scorer(ModelRelease("diabetes", "1", "models:/diabetes/1", graph))
    assert scorer.regression and scorer.classes is None
    rows = load_source("bundled:diabetes").frame
    columns = {name: rows[name].tolist() for name in scorer.columns}
    values = scorer.predict(columns, len(rows)).labels
    assert values.shape == (442,) and np.isfinite(values).all()
    assert r2_score(rows["progression"].astype(float), values) > 0.4  # mostly rows it trained on

    # The inference server, as a process: values on /v1/predict, MLflow's shape on /invocations.
    records = rows.drop(columns=["progression"]).head(5).to_dict(orient="records")
    with serving(SimpleNamespace(workspace=ws), "models:/diabetes@champion") as server:
        answer = server.post("/v1/predict", json={"records": records})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model"] == {"name": "diabetes", "version": "1"} and "labels" not in body
        np.testing.assert_allclose(body["values"], values[:5], rtol=1e-6)
        mlflow_answer = server.post("/invocations", json={"dataframe_records": records})
        np.testing.assert_allclose(mlflow_answer.json()["predictions"], values[:5], rtol=1e-6)

    # Audited by sex (coded 1 and 2 in the data), on groups of at least 30 test rows: each
    # group's MAE is measured and their ratio gated; a tighter limit than the gap fails the gate.
    audit = ("--set", "fairness.features=[sex]", "--set", "fairness.min_group_rows=30")
    code, summary, err = run_cli(capsys, "--workspace", str(ws), *DIABETES, *audit)
    assert code == 0, err
    sex = summary["fairness"]["sex"]
    assert 1 <= sex["mae_ratio"] < 1.25 and sex["passed"] and sex["worst_group_mae"] > 0
    ratio = sex["mae_ratio"]
    tight = f"fairness.max_mae_ratio={1 + (ratio - 1) / 2}"
    code, summary, err = run_cli(capsys, "--workspace", str(ws), *DIABETES, *audit, "--set", tight)
    assert code == 1 and summary["error_type"] == "GateFailed", summary
    assert f"mae_ratio for sex = {ratio:.3f} (mean absolute error " in summary["error"]
    assert champion(ws, "diabetes") == "1"


DATA_CASES = {
    "text-in-the-target": (
        set_cell("progression", 6, "high"),
        "column 'progression' expects numbers",
    ),
    "one-value-in-every-row": (
        lambda f: f.assign(progression="151"),
        "target 'progression' has the one value 151 in every row; there is nothing to regress on",
    ),
    "target-outside-its-bounds": (
        set_cell("progression", 2, "-40"),
        "outside its bounds [0, 1000]",
    ),
    "too-few-rows": (lambda f: f.head(2), "2 rows are too few for the split"),
}


@pytest.fixture(scope="module")
def diabetes_workspace(tmp_path_factory) -> Path:
    """A workspace whose diabetes champion is v1, a ridge regression on the bundled rows."""
    from flows.tabular import run_pipeline
    from trustflow.config import load_config
    from trustflow.workspace import Workspace

    root = tmp_path_factory.mktemp("diabetes")
    one = "train.candidates=[{name: ridge, kind: ridge}]"
    config = load_config(
        None, ["data.source=bundled:diabetes", "data.dataset=bundled:diabetes", one]
    )
    assert run_pipeline(config, Workspace(root=root)).is_completed()
    return root


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_regression_data_fails_cleanly(case, diabetes_workspace, tmp_path, capsys) -> None:
    change, expected = DATA_CASES[case]
    before = registry_and_data(diabetes_workspace, "diabetes")
    source = write_csv(change(load_source("bundled:diabetes").frame), tmp_path / f"{case}.csv")
    error = fails_in_one_line(
        capsys, diabetes_workspace, "--set", f"data.source=csv:{source}",
        "--set", "data.dataset=bundled:diabetes",
    )  # fmt: skip
    assert expected in error
    assert registry_and_data(diabetes_workspace, "diabetes") == before


CONFIG_CASES = {
    "a-classification-metric": (
        ["--set", "registry.metric=roc_auc"],
        "registry.metric roc_auc does not suit data set 'diabetes' (task: regression); use one "
        "of rmse, mae, r2",
    ),
    "only-a-classifier": (
        ["--set", "train.candidates=[{name: lr, kind: logistic_regression}]"],
        "no candidate of train.candidates can learn a regression target: candidate 'lr' left "
        "out: logistic_regression cannot learn a regression target",
    ),
}


def test_a_category_to_regress_on_is_one_line(diabetes_workspace, tmp_path, capsys) -> None:
    from importlib import resources

    text = resources.files("trustflow.datasets").joinpath("diabetes", "schema.yaml").read_text()
    schema = tmp_path / "schema.yaml"
    schema.write_text(text.replace("column: progression", "column: sex"))
    before = registry_and_data(diabetes_workspace, "diabetes")
    error = fails_in_one_line(capsys, diabetes_workspace, "--set", f"data.dataset={schema}")
    assert "target 'sex' (task: regression) must be a numeric column" in error
    assert registry_and_data(diabetes_workspace, "diabetes") == before


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_a_config_that_cannot_regress_fails_before_any_work(
    case, diabetes_workspace, capsys
) -> None:
    args, expected = CONFIG_CASES[case]
    before = registry_and_data(diabetes_workspace, "diabetes")
    error = fails_in_one_line(capsys, diabetes_workspace, *DIABETES, *args)
    assert expected in error
    assert registry_and_data(diabetes_workspace, "diabetes") == before
