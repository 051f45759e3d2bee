"""train-tabular with differentially private preprocessing, under Prefect's test harness on
3,000 rows of Adult. The runs in this module share one workspace and go in order: a release
spends ε, an identical rerun reuses it for free, a new release spends again, and the run that
would overspend is refused before it reads the data, with nothing trained or registered."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import FAST_CANDIDATES, write_csv
from tests.flows.helpers import client_for, run_cli, versions
from trustflow.io import file_digest

PRIVATE = (
    "privacy.mode=preprocessing", "privacy.epsilon=1", "privacy.budget=2.5",
    # OpenDP's noise is fresh and unseedable, so on 3,000 rows a new release can move a model
    # across the fairness limit; these tests are about the privacy budget, not that gate.
    "fairness.max_equalized_odds_difference=null",
)  # fmt: skip


@pytest.fixture(scope="module")
def source(tmp_path_factory, adult_sample: pd.DataFrame) -> Path:
    return write_csv(adult_sample, tmp_path_factory.mktemp("src") / "adult.csv")


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("private")


def _run(capsys, ws: Path, source: Path, *extra: str) -> tuple[int, dict, str]:
    settings = [f"data.source=csv:{source}", FAST_CANDIDATES, *PRIVATE, *extra]
    args = [arg for setting in settings for arg in ("--set", setting)]
    return run_cli(capsys, "--workspace", str(ws), *args)


@pytest.fixture(scope="module")
def runs() -> dict:
    return {}


def test_a_release_spends_epsilon_and_is_recorded_everywhere(capsys, ws, source, runs) -> None:
    code, summary, err = _run(capsys, ws, source)
    assert code == 0, err
    runs["first"] = summary
    privacy = summary["privacy"]
    assert privacy | {"mode": "preprocessing", "epsilon_spent": 1.0, "delta": 0.0} == privacy
    assert privacy["budget"] == 2.5 and privacy["budget_remaining"] == 1.5
    assert privacy["dataset_md5"] == summary["dataset"]["md5"] and not privacy["reused"]
    ledger = json.loads((ws / ".trustflow" / "privacy-ledger.json").read_text())
    [entry] = ledger["entries"]
    assert entry["release_id"] == privacy["release_id"] and entry["epsilon"] == 1.0
    assert entry["dataset_md5"] == summary["dataset"]["md5"] and "@" in entry["who"]
    client = client_for(ws)
    run = client.get_run(summary["mlflow"]["run_id"])
    assert run.data.tags["trustflow.privacy.release_id"] == privacy["release_id"]
    assert run.data.metrics["privacy.epsilon_spent"] == 1.0
    logged = Path(client.download_artifacts(run.info.run_id, "privacy/release.json"))
    assert json.loads(logged.read_text())["statistics"] == 21
    card = Path(summary["model_card"].removeprefix("file://")).read_text()
    assert "ε = 1-differentially private" in card and "NOT differentially private" in card


def test_an_identical_rerun_reuses_the_release_and_spends_nothing(
    capsys, ws, source, runs, tmp_path
):
    # With a privacy-utility report to log (it is not part of the release's settings).
    plot = tmp_path / "privacy_utility.png"
    plot.write_bytes(b"\x89PNG\r\n\x1a\n")
    plot.with_suffix(".json").write_text("{}")
    code, summary, err = _run(capsys, ws, source, f"privacy.utility_report={plot}")
    assert code == 0, err
    logged = client_for(ws).list_artifacts(summary["mlflow"]["run_id"], "privacy/utility")
    assert {Path(f.path).name for f in logged} == {"privacy_utility.png", "privacy_utility.json"}
    privacy = summary["privacy"]
    assert privacy["reused"] and privacy["epsilon_spent"] == 0.0
    assert privacy["release_id"] == runs["first"]["privacy"]["release_id"]
    assert privacy["budget_remaining"] == 1.5
    # Same statistics, same preprocessor bytes: training comes from Prefect's cache.
    assert summary["cache"]["train"] and summary["metrics"] == runs["first"]["metrics"]


def test_a_new_release_draws_fresh_noise_and_spends_again(capsys, ws, source, runs) -> None:
    code, summary, err = _run(capsys, ws, source, "privacy.release=second")
    assert code == 0, err
    privacy = summary["privacy"]
    assert not privacy["reused"] and privacy["epsilon_spent"] == 1.0
    assert privacy["release_id"] != runs["first"]["privacy"]["release_id"]
    assert privacy["budget_remaining"] == 0.5


def test_a_missing_utility_report_is_named_before_anything_runs(capsys, ws, source) -> None:
    code, summary, _ = _run(capsys, ws, source, "privacy.utility_report=/nowhere/plot.png")
    assert (
        code == 1 and summary["error"] == "privacy.utility_report: /nowhere/plot.png is not a file"
    )


def _state(ws: Path) -> dict:
    client = client_for(ws)
    data = ws / "data" / "adult.parquet"
    return {
        "ledger": (ws / ".trustflow" / "privacy-ledger.json").read_bytes(),
        "data": (file_digest(data), data.stat().st_mtime_ns),
        "versions": versions(ws),
        "runs": len(client.search_runs([e.experiment_id for e in client.search_experiments()])),
        "staging": sorted((ws / ".trustflow" / "staging").glob("*")),
    }


def test_the_run_that_would_overspend_is_refused_before_reading_data(capsys, ws, source) -> None:
    before = _state(ws)
    code, summary, _ = _run(capsys, ws, source, "privacy.release=third")
    assert code == 1 and summary["error_type"] == "PrivacyBudgetExceeded", summary
    assert summary["error"].startswith("privacy budget exceeded for data set adult")
    assert "spent ε = 2, requested ε = 1, budget ε = 2.5" in summary["error"]
    # Ledger, data file (not even rewritten: ingest never ran), registry and runs unchanged.
    assert _state(ws) == before


def test_a_corrupt_ledger_stops_the_run_and_stays_as_it_was(capsys, source, tmp_path) -> None:
    ws = tmp_path / "fresh"
    ledger = ws / ".trustflow" / "privacy-ledger.json"
    ledger.parent.mkdir(parents=True)
    ledger.write_text('{"format": 1, "entries": [')
    code, summary, _ = _run(capsys, ws, source)
    assert code == 1 and summary["error_type"] == "PrivacyLedgerError"
    assert summary["error"].startswith(f"privacy ledger {ledger} is corrupt")
    assert ledger.read_text() == '{"format": 1, "entries": ['
    assert not (ws / "data").exists()  # stopped before ingest
