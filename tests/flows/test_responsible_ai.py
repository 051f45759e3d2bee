"""The responsible-AI stages of train-tabular under Prefect's test harness, on 3,000 rows of Adult:
the audit of every candidate, explanations and the model card land in MLflow and Prefect; the
mitigated candidate is audited but never deployable; an impossible limit fails the run with a
one-line reason and leaves the champion where it was."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from flows.tabular import run_pipeline
from tests.conftest import small_config, write_csv
from tests.e2e.processes import pointed_at
from tests.flows.helpers import champion, client_for, run_cli, versions
from trustflow.serving.scorer import ModelRejected
from trustflow.workspace import Workspace

RESPONSIBLE_CANDIDATES = (
    "train.candidates=[{name: logreg, kind: logistic_regression, params: {C: 1.0}},"
    " {name: hgb, kind: hist_gradient_boosting, params: {max_iter: 30}},"
    " {name: ebm, kind: explainable_boosting, params: {outer_bags: 1, interactions: 1}},"
    " {name: hgb-fair, kind: threshold_optimizer,"
    "  params: {base: hgb, sensitive_feature: sex, constraints: equalized_odds}}]"
)
# On 600 test rows, 30 lets the larger race groups (White, Black) be measured.
SETTINGS = (RESPONSIBLE_CANDIDATES, "fairness.min_group_rows=30")


@pytest.fixture(scope="module")
def source(tmp_path_factory, adult_sample: pd.DataFrame) -> Path:
    return write_csv(adult_sample, tmp_path_factory.mktemp("src") / "adult.csv")


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    return Workspace(root=tmp_path_factory.mktemp("responsible"))


@pytest.fixture(scope="module")
def first(source: Path, ws: Workspace):
    state = run_pipeline(small_config(source, *SETTINGS), ws)
    assert state.is_completed(), state.message
    return state.result()


def _candidate_runs(ws: Workspace, parent_run_id: str) -> dict[str, object]:
    client = client_for(ws.root)
    parent = client.get_run(parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'"
    )
    return {run.info.run_name: run for run in children}


def _artifacts(ws: Workspace, run_id: str, path: str) -> set[str]:
    return {Path(f.path).name for f in client_for(ws.root).list_artifacts(run_id, path)}


def test_every_candidate_is_audited_and_logged(first, ws: Workspace) -> None:
    runs = _candidate_runs(ws, first.mlflow["run_id"])
    assert set(runs) == {"logreg", "hgb", "ebm", "hgb-fair"}
    for name, run in runs.items():
        metrics = run.data.metrics  # type: ignore[attr-defined]
        assert "fairness.sex.equalized_odds_difference" in metrics, name
        assert "fairness.sex.demographic_parity_ratio" in metrics, name
        assert run.data.tags["trustflow.fairness.passed"] in ("true", "false")  # type: ignore[attr-defined]
        files = _artifacts(ws, run.info.run_id, "fairness")  # type: ignore[attr-defined]
        assert {"audit.json", "sex.png", "race.png", "sex_x_race.png"} <= files, name
    # The run's gate table matches the summary's.
    gates = client_for(ws.root).download_artifacts(first.mlflow["run_id"], "gates.json")
    table = json.loads(Path(gates).read_text())
    assert {name: "passed" if row["passed"] else "failed" for name, row in table.items()} == {
        name: "passed" if verdict == "passed" else "failed" for name, verdict in first.gates.items()
    }


def test_the_mitigated_candidate_is_fairer_than_its_base_but_not_deployable(first, ws) -> None:
    runs = _candidate_runs(ws, first.mlflow["run_id"])
    key = "fairness.sex.equalized_odds_difference"
    base = runs["hgb"].data.metrics[key]  # type: ignore[attr-defined]
    mitigated = runs["hgb-fair"].data.metrics[key]  # type: ignore[attr-defined]
    assert mitigated < base, (base, mitigated)
    assert "no ONNX form for 'hgb-fair'" in first.gates["hgb-fair"]
    assert "cannot be deployed" in first.gates["hgb-fair"]
    assert first.model.candidate != "hgb-fair"


def test_explanations_are_logged_for_the_best_candidate_and_the_glass_box(first, ws) -> None:
    best = first.model.candidate
    parent = _artifacts(ws, first.mlflow["run_id"], "explanation")
    stem = f"{best}-morris_sensitivity"
    assert {f"{stem}.png", f"{stem}.json", f"{stem}.html"} <= parent
    ebm_run = _candidate_runs(ws, first.mlflow["run_id"])["ebm"]
    glass = _artifacts(ws, ebm_run.info.run_id, "explanation")  # type: ignore[attr-defined]
    assert {"ebm-ebm_term_importance.png", "ebm-ebm_term_importance.json"} <= glass
    explanation = client_for(ws.root).download_artifacts(
        first.mlflow["run_id"], f"explanation/{stem}.json"
    )
    importances = json.loads(Path(explanation).read_text())["importances"]
    assert len(importances) == 14 and importances[0]["score"] >= importances[-1]["score"]


def test_the_model_card_is_in_mlflow_the_registry_and_prefect(first, ws: Workspace) -> None:
    card_path = Path(first.model_card.removeprefix("file://"))
    card = card_path.read_text()
    assert card.startswith(f"# Model card: adult-income v{first.model.version}")
    assert first.dataset.md5 in card and "| sex |" in card and "No differential privacy" in card
    version = client_for(ws.root).get_model_version("adult-income", first.model.version)
    assert version.description == card
    assert version.tags["trustflow.model_card"] == first.model_card
    assert version.tags["trustflow.fairness.passed"] == "true"
    assert set(first.fairness) == {"sex", "race", "sex & race"}
    assert first.fairness["sex"].passed and not first.fairness["sex & race"].gated

    async def latest_card() -> str:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["model-card-adult-income"])
                ),
                sort=ArtifactSort.CREATED_DESC,
                limit=1,
            )
        return str(found[0].data) if found else ""

    assert asyncio.run(latest_card()) == card


def test_an_impossible_limit_fails_the_run_and_leaves_the_champion(first, ws, source, capsys):
    before = versions(ws.root)
    code, summary, err = run_cli(
        capsys, "--workspace", str(ws.root), "--set", f"data.source=csv:{source}",
        "--set", SETTINGS[0], "--set", SETTINGS[1],
        "--set", "train.seed=7",  # other models, so the failing one is a new version
        "--set", "fairness.max_equalized_odds_difference=0",
    )  # fmt: skip
    assert code == 1 and summary["error_type"] == "GateFailed", summary
    message = summary["error"]
    assert "\n" not in message and "Traceback" not in err
    assert "not promoted: equalized_odds_difference for " in message
    assert "exceeds fairness.max_equalized_odds_difference = 0" in message
    assert " vs " in message and "no candidate passed the gates" in message
    assert champion(ws.root) == first.model.version  # the alias did not move
    after = versions(ws.root)
    assert len(after) == len(before) + 1  # the audit trail: registered, tagged, never served
    client = client_for(ws.root)
    failed = client.get_model_version("adult-income", after[-1])
    assert failed.tags["trustflow.fairness.passed"] == "false"
    assert (
        failed.description.startswith("# Model card") and "Gates: **FAILED**" in failed.description
    )
    run = client.get_run(failed.tags["trustflow.run_id"])
    assert run.info.status == "FAILED" and run.data.tags["trustflow.model.reason"] == message
    with pointed_at(f"sqlite:///{ws.root / 'mlflow.db'}"):
        from tasks.tracking.source import RegistrySource

        with pytest.raises(ModelRejected, match="failed the fairness gate"):
            RegistrySource(f"models:/adult-income/{after[-1]}").load()
