"""The champion is compared only on rows it never trained on: after the split seed changes, the
new test split holds rows the champion trained on, and those are left out."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.sklearn
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from flows.tabular import run_pipeline
from tests.conftest import small_config
from tests.e2e.processes import pointed_at
from tests.flows.helpers import client_for
from trustflow.config import TabularConfig
from trustflow.data.fingerprint import row_hashes, rows_digest, seen_rows, unseen
from trustflow.data.split import split_frame
from trustflow.models.preprocess import features_and_target
from trustflow.workspace import Workspace

SCHEMA = TabularConfig().data.dataset


def _run(source: Path, ws: Workspace, *overrides: str):
    # The fairness gate is not what this is about: a 3,000-row sample's splits can fail it.
    state = run_pipeline(
        small_config(source, "fairness.max_equalized_odds_difference=null", *overrides), ws
    )
    assert state.is_completed(), state.message
    return state.result()


def test_a_new_split_seed_scores_the_champion_only_on_rows_it_never_saw(
    sample_csv: Path, tmp_path: Path
) -> None:
    ws = Workspace(root=tmp_path / "ws")
    first = _run(sample_csv, ws)
    assert first.model.comparison_rows is None  # first champion: nothing to compare with
    second = _run(sample_csv, ws, "split.seed=7")
    assert second.model.version == "2"

    tmp = tmp_path / "promotion"
    tmp.mkdir()
    client = client_for(ws.root)
    promotion = json.loads(
        Path(client.download_artifacts(second.mlflow["run_id"], "promotion.json", str(tmp)))
        .read_text()
    )  # fmt: skip

    # The same rows, found independently: the new test split less v1's train and valid rows.
    frame = pd.read_parquet(ws.data_dir / "adult.parquet")
    target = SCHEMA.target.column
    old = split_frame(frame, target, TabularConfig().split)
    new = split_frame(frame, target, TabularConfig().split.model_copy(update={"seed": 7}))
    fresh = new.test[unseen(new.test, seen_rows(old.train, old.valid))]
    assert promotion["comparison_rows"] == second.model.comparison_rows == len(fresh)
    assert promotion["comparison_md5"] == rows_digest(fresh) == second.model.comparison_md5
    assert 100 <= len(fresh) < len(new.test)
    assert set(row_hashes(fresh)) <= set(row_hashes(old.test))  # all held out from v1

    # v1's comparison score is its held-out score on those rows, not the leaky one on the whole
    # new test split (which holds rows v1 trained on).
    with pointed_at(f"sqlite:///{ws.mlflow_db}"):
        v1 = mlflow.sklearn.load_model("models:/adult-income/1")

    def auc(rows: pd.DataFrame) -> float:
        features, labels = features_and_target(rows, SCHEMA)
        return float(roc_auc_score(labels, v1.predict_proba(features)[:, 1]))

    assert promotion["champion_score"] == pytest.approx(auc(fresh), abs=1e-12)
    assert promotion["champion_score"] != pytest.approx(auc(new.test), abs=1e-6)
    assert f"{len(fresh):,} test rows v1 never trained on" in promotion["reason"]
