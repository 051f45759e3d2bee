"""A run survives one bad candidate: it is recorded as failed, with its one-line reason, in the
summary, the MLflow run and the model card; the others go on, and the gates pick among them.
A run where no candidate trains fails, registering nothing."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from tests.conftest import SMALL_SAMPLE_FAIRNESS, write_csv
from tests.flows.helpers import client_for, run_cli, versions

# An Adam step this large overflows the network's weights in its first epoch.
DIVERGING = {"name": "mlp", "kind": "mlp",
             "params": {"hidden": [8], "learning_rate": 1.0e30, "max_epochs": 2}}  # fmt: skip
# A 300-row validation split holds a handful of rows of some races; told not to fold them into
# one group, the mitigation fails naming them.
UNFOLDED = {"base": "hgb", "sensitive_feature": "race", "small_groups": "fail"}
BY_RACE = {"name": "hgb-fair", "kind": "threshold_optimizer", "params": UNFOLDED}
GOOD = [{"name": "logreg", "kind": "logistic_regression"},
        {"name": "hgb", "kind": "hist_gradient_boosting", "params": {"max_iter": 30}}]  # fmt: skip


def _candidates(*items: dict) -> str:
    return f"train.candidates={json.dumps(list(items), separators=(',', ':'))}"


@pytest.fixture(scope="module")
def source(tmp_path_factory, adult_sample: pd.DataFrame) -> Path:
    return write_csv(adult_sample, tmp_path_factory.mktemp("src") / "adult.csv")


def test_failed_candidates_are_recorded_and_the_others_go_on(source, tmp_path, capsys) -> None:
    ws = tmp_path / "ws"
    code, summary, err = run_cli(
        capsys, "--workspace", str(ws), "--set", f"data.source=csv:{source}",
        "--set", _candidates(*GOOD, BY_RACE, DIVERGING), "--set", SMALL_SAMPLE_FAIRNESS,
    )  # fmt: skip

    assert code == 0, summary
    failed = summary["failed"]
    assert set(failed) == {"mlp", "hgb-fair"}, failed
    assert failed["mlp"].startswith("candidate 'mlp' (mlp) failed to train: FloatingPointError: ")
    assert "diverged" in failed["mlp"] and "params.learning_rate (now 1e+30)" in failed["mlp"]
    assert failed["hgb-fair"].startswith(
        "candidate 'hgb-fair' (threshold_optimizer) failed to train: ValueError: race group(s) "
        "with fewer than 30 validation rows or one class only ("
    )
    assert all("\n" not in reason for reason in failed.values())
    assert set(summary["candidates"]) == set(summary["gates"]) == {"logreg", "hgb"}
    assert summary["model"]["candidate"] in ("logreg", "hgb") and summary["model"]["promoted"]
    assert "Traceback" not in err

    client = client_for(ws)
    run = client.get_run(summary["mlflow"]["run_id"])
    assert run.data.tags["trustflow.failed.mlp"] == failed["mlp"]
    assert run.data.tags["trustflow.failed.hgb-fair"] == failed["hgb-fair"]
    mlflow.set_tracking_uri(summary["mlflow"]["tracking_uri"])
    card = mlflow.artifacts.load_text(summary["model_card"])
    assert "Candidates that did not train" in card
    assert f"- {failed['mlp']}" in card and f"- {failed['hgb-fair']}" in card


def test_a_run_where_no_candidate_trains_fails_and_registers_nothing(
    source, tmp_path, capsys
) -> None:
    ws = tmp_path / "ws"
    mitigated = {"name": "mlp-fair", "kind": "threshold_optimizer",
                 "params": {"base": "mlp", "sensitive_feature": "sex"}}  # fmt: skip
    code, summary, err = run_cli(
        capsys, "--workspace", str(ws), "--set", f"data.source=csv:{source}",
        "--set", _candidates(DIVERGING, mitigated), "--set", SMALL_SAMPLE_FAIRNESS,
    )  # fmt: skip

    assert code == 1 and summary["error_type"] == "NoCandidateTrained", summary
    assert summary["error"].startswith("no candidate trained: candidate 'mlp' (mlp) failed")
    assert (
        "candidate 'mlp-fair' (threshold_optimizer) not trained: its base 'mlp' failed"
        in (summary["error"])
    )
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert versions(ws) == []
