"""train-tabular end to end under Prefect's test harness, on a 3,000-row CSV of Adult.

The tests in this module share one workspace and run in order: first run, cached re-run, one
changed cell.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from importlib import metadata
from pathlib import Path
from unittest import mock

import mlflow
import mlflow.onnx
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
import yaml

from flows.tabular import run_pipeline
from tests.conftest import small_config, write_csv
from tests.flows.helpers import champion, client_for, versions
from trustflow.config import TabularConfig
from trustflow.export.onnx import inference_session, to_feed
from trustflow.io import file_digest
from trustflow.workspace import Workspace

DOWNSTREAM = ("split", "preprocess", "train", "evaluate", "export", "audit", "explain")
SCHEMA = TabularConfig().data.dataset


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    return Workspace(root=tmp_path_factory.mktemp("workspace"))


@pytest.fixture(scope="module")
def source(tmp_path_factory, adult_sample: pd.DataFrame) -> Path:
    return write_csv(adult_sample, tmp_path_factory.mktemp("src") / "adult.csv")


def _run(source: Path, ws: Workspace):
    state = run_pipeline(small_config(source), ws)
    assert state.is_completed(), state.message
    return state.result()


# The first run runs as GitHub Actions would run it: its versions name the CI run.
GITHUB = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "acme/trustflow",
          "GITHUB_RUN_ID": "42", "GITHUB_RUN_ATTEMPT": "2"}  # fmt: skip


@pytest.fixture(scope="module")
def first(source: Path, ws: Workspace):
    with mock.patch.dict(os.environ, GITHUB):
        return _run(source, ws)


def test_first_run_registers_a_champion_with_lineage(first, ws: Workspace) -> None:
    assert first.model.version == "1" and first.model.alias == "champion"
    assert first.model.promoted and first.model.new_version
    assert not any(first.cache.values())
    assert first.model.candidate in first.candidates
    # The champion is the best candidate among those that pass the gates.
    assert first.gates[first.model.candidate] == "passed"
    best = first.candidates[first.model.candidate]
    passing = [first.candidates[name] for name, gate in first.gates.items() if gate == "passed"]
    assert best["roc_auc"] == max(c["roc_auc"] for c in passing)

    # DVC: the versioned file, its .dvc record and the summary agree on the md5.
    dvc = yaml.safe_load((ws.root / first.dataset.dvc_file).read_text())["outs"][0]
    assert dvc["md5"] == first.dataset.md5 == file_digest(ws.data_dir / "adult.parquet")

    # MLflow: parent run with lineage, one nested run per candidate, plots and models.
    client = client_for(ws.root)
    run = client.get_run(first.mlflow["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["trustflow.data.md5"] == first.dataset.md5
    assert run.data.tags["trustflow.data.dvc_file"] == "data/adult.parquet.dvc"
    assert run.inputs.dataset_inputs[0].dataset.name == "adult"
    children = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert sorted(c.info.run_name for c in children) == ["hgb", "logreg"]
    for child in children:
        plots = {a.path for a in client.list_artifacts(child.info.run_id, "plots")}
        assert any("roc-" in p for p in plots) and any("confusion-" in p for p in plots)
        assert child.data.metrics["roc_auc"] == first.candidates[child.info.run_name]["roc_auc"]
    version = client.get_model_version("adult-income", "1")
    assert version.tags["trustflow.data.md5"] == first.dataset.md5
    assert version.tags["trustflow.candidate"] == first.model.candidate
    # The registered version resolves to an ONNX form that scores like the native one.
    assert first.onnx.passed and first.onnx.max_abs_diff <= 1e-4
    uri = f"models:/adult-income/{first.model.version}"
    native = mlflow.sklearn.load_model(uri)
    session = inference_session(mlflow.onnx.load_model(uri).SerializeToString())
    rows = pd.read_parquet(ws.data_dir / "adult.parquet").head(50)
    _, probabilities = session.run(None, to_feed(rows, SCHEMA))
    np.testing.assert_allclose(
        probabilities, native.predict_proba(rows[SCHEMA.feature_columns]), atol=1e-4
    )
    # Artifacts stay inside the workspace.
    assert list((ws.root / "mlartifacts").rglob("MLmodel"))


def test_the_version_records_the_environment_and_the_ci_run_that_trained_it(first, ws) -> None:
    client = client_for(ws.root)
    version = client.get_model_version("adult-income", first.model.version)
    run = client.get_run(first.mlflow["run_id"])
    requirements = Path(
        client.download_artifacts(run.info.run_id, "environment/requirements.txt")
    ).read_bytes()
    assert version.tags["trustflow.environment.sha256"] == hashlib.sha256(requirements).hexdigest()
    lines = requirements.decode().splitlines()
    assert f"mlflow=={metadata.version('mlflow')}" in lines
    assert f"scikit-learn=={metadata.version('scikit-learn')}" in lines
    names = [line.split("==")[0].lower() for line in lines]
    assert names == sorted(set(names))  # one line per distribution, by name
    url = "https://github.com/acme/trustflow/actions/runs/42/attempts/2"
    assert version.tags["trustflow.ci.run_url"] == run.data.tags["trustflow.ci.run_url"] == url
    # The run names the Prefect flow run that opened it (`trustflow trigger` finds it so).
    uuid.UUID(run.data.tags["trustflow.prefect.flow_run_id"])


def test_rerun_with_unchanged_inputs_is_served_from_cache(first, source, ws) -> None:
    again = _run(source, ws)
    assert all(again.cache[stage] for stage in DOWNSTREAM)
    assert again.metrics == first.metrics
    assert again.model.version == "1" and not again.model.new_version
    assert versions(ws.root) == ["1"]  # no duplicate version for an identical model


def test_one_changed_cell_recomputes_everything_downstream(first, source, ws, tmp_path) -> None:
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    frame.loc[0, "age"] = str(int(frame.loc[0, "age"]) + 1)
    write_csv(frame, source)
    changed = _run(source, ws)
    assert changed.dataset.md5 != first.dataset.md5
    assert not any(changed.cache[stage] for stage in DOWNSTREAM)
    assert changed.model.new_version and versions(ws.root) == ["1", "2"]
    # The champion moves only if v2 is better on the metric; either way it is a real version.
    expected = "2" if changed.model.promoted else "1"
    assert champion(ws.root) == expected


def test_a_second_workspace_shares_no_state(first, source, tmp_path) -> None:
    other = Workspace(root=tmp_path / "other")
    result = _run(source, other)
    assert result.model.version == "1"  # its own registry, starting from scratch
    assert not result.cache["train"]  # its own cache
    assert result.mlflow["tracking_uri"].endswith(f"{other.root}/mlflow.db")


def test_impute_policy_keeps_incomplete_rows_end_to_end(source, adult_sample, tmp_path) -> None:
    incomplete = int(adult_sample.isin(["?"]).any(axis=1).sum())
    state = run_pipeline(
        small_config(source, "data.missing=impute"), Workspace(root=tmp_path / "impute")
    )
    assert state.is_completed(), state.message
    result = state.result()
    assert result.dataset.rows == 3000 and result.dataset.rows_dropped == 0
    assert incomplete > 0 and result.metrics["roc_auc"] > 0.8


def test_a_random_forest_candidate_goes_the_whole_way(source, tmp_path) -> None:
    """A kind added in one registry entry trains, converts with parity, and is registered."""
    rf = (
        "train.candidates=[{name: rf, kind: random_forest, params: {n_estimators: 60, "
        "min_samples_leaf: 5}}]"
    )
    state = run_pipeline(
        small_config(source, rf, "fairness.max_equalized_odds_difference=null"),
        Workspace(root=tmp_path / "rf"),
    )
    assert state.is_completed(), state.message
    result = state.result()
    assert result.model.candidate == "rf" and result.gates["rf"] == "passed"
    assert result.onnx.passed and result.onnx.max_abs_diff <= 1e-6
    version = client_for(tmp_path / "rf").get_model_version("adult-income", "1")
    assert version.tags["trustflow.candidate.kind"] == "random_forest"
