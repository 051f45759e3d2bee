"""A run killed while MLflow saves its best model: the half-written model is never reused,
registered or served, and the next run cleans up after it and registers a whole v1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import LoggedModelStatus

from tasks.tracking.registry import version_model_id
from tasks.tracking.source import RegistrySource
from tasks.tracking.tags import REAPED_BY_TAG
from tests.conftest import SAMPLE_RUN
from tests.e2e.processes import pointed_at
from tests.faults.runs import kill_when, none_left_behind, query, run, start_run
from tests.flows.helpers import client_for, versions
from trustflow.config import TabularConfig
from trustflow.export.onnx import inference_session, to_feed

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

PENDING = LoggedModelStatus.PENDING.to_int()


def test_a_model_killed_mid_save_never_becomes_champion(tmp_path: Path, sample_csv: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    args = ("--json", "--set", f"data.source=csv:{sample_csv}", *SAMPLE_RUN)
    db = ws / "mlflow.db"
    # hgb is logged last and is the best of the two: kill while its model is PENDING, i.e.
    # after MLflow wrote its content tags and before its files are complete.
    process = start_run(ws, *args)
    kill_when(
        process,
        lambda: bool(
            query(db, "SELECT 1 FROM logged_models WHERE name = 'hgb' AND status = ?", PENDING)
        ),
    )
    (pending_id,) = query(db, "SELECT model_id FROM logged_models WHERE status = ?", PENDING)[0]
    (killed_run,) = query(db, "SELECT run_uuid FROM runs WHERE status = 'RUNNING'")[0]
    # kill -9 ran no cleanup; Prefect's temporary server (its own session) stops on its own.
    assert none_left_behind(ws, process.pid) == []
    assert versions(ws) == []

    rerun = run(ws, *args)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["model"]["version"] == "1" and summary["model"]["alias"] == "champion"

    client = client_for(ws)
    # What the crash left behind is closed, with a note, by the rerun.
    killed = client.get_run(killed_run)
    assert killed.info.status == "KILLED"
    assert killed.data.tags[REAPED_BY_TAG] == summary["mlflow"]["run_id"]
    assert "marked KILLED" in killed.data.tags["mlflow.note.content"]
    assert client.get_logged_model(pending_id).status == LoggedModelStatus.FAILED
    assert not query(db, "SELECT 1 FROM runs WHERE status = 'RUNNING'")
    # v1 is a whole model: not the half-written one, and it loads and serves.
    v1 = version_model_id(client.get_model_version("adult-income", "1"))
    assert v1 is not None and v1 != pending_id
    assert client.get_logged_model(v1).status == LoggedModelStatus.READY
    assert versions(ws) == ["1"]
    with pointed_at(f"sqlite:///{db}"):
        release = RegistrySource("models:/adult-income@champion").load()
    rows = pd.read_parquet(ws / "data" / "adult.parquet").head(20)
    feed = to_feed(rows, TabularConfig().data.dataset)
    labels, probabilities = inference_session(release.graph).run(None, feed)
    assert release.version == "1" and len(labels) == 20
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
