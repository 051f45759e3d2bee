"""Registration against a real (SQLite) registry: one version per content, even when two runs
(in two workspaces on one tracking server) both found none and both created one."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression

from tasks.tracking.models import log_model_once
from tasks.tracking.registry import keep_first_version
from tasks.tracking.tags import ONNX_SHA_TAG, SHA_TAG
from tests.e2e.processes import pointed_at

CONTENT = {SHA_TAG: "a" * 64, ONNX_SHA_TAG: "none"}


@pytest.fixture
def model_uri(tmp_path: Path):
    """A whole logged model (files uploaded, their hash recorded), as a run logs it."""
    with pointed_at(f"sqlite:///{tmp_path / 'mlflow.db'}"):
        frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
        model = LogisticRegression().fit(frame, [0, 0, 1, 1])
        # Artifacts in the temp dir (a SQLite store's default is ./mlruns, under the cwd).
        experiment_id = mlflow.create_experiment("registration", (tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment_id):
            uri = log_model_once(experiment_id, CONTENT, "m", model, None, frame, [])
        yield uri


def _create(uri: str) -> str:
    model_id = uri.removeprefix("models:/")
    version = MlflowClient().create_model_version("m", source=uri, model_id=model_id, tags=CONTENT)
    return str(version.version)


def test_of_two_versions_created_at_once_for_one_content_the_first_is_kept(model_uri) -> None:
    client = MlflowClient()
    client.create_registered_model("m")
    first, second = _create(model_uri), _create(model_uri)  # both racers created one

    assert keep_first_version("m", CONTENT, first) == (first, True)  # the earlier run's
    assert keep_first_version("m", CONTENT, second) == (first, False)  # the later run's
    assert [str(v.version) for v in client.search_model_versions("name='m'")] == [first]


def test_a_version_alone_is_kept(model_uri) -> None:
    MlflowClient().create_registered_model("m")
    only = _create(model_uri)
    assert keep_first_version("m", CONTENT, only) == (only, True)
