"""train-tabular with ``privacy.mode: training`` (DP-SGD on every candidate, after the DP
preprocessing release), under Prefect's test harness on 3,000 rows of Adult. The first three
runs share one workspace and go in order: a run spends the preprocessing release and one
release per candidate, a rerun spends nothing (Prefect's cache returns the models), and a run
that would train again past the budget is refused before it reads the data."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import write_csv
from tests.flows.helpers import client_for, fails_in_one_line, run_cli, versions
from tests.flows.test_privacy_flow import _state

DP_CANDIDATES = [
    {"name": "dp-logreg", "kind": "dp_logistic_regression",
     "params": {"max_epochs": 3, "batch_size": 256}},
    {"name": "mlp", "kind": "mlp", "params": {"hidden": [16], "max_epochs": 3, "batch_size": 256}},
]  # fmt: skip
TRAINING = (
    "privacy.mode=training", "privacy.budget=3.5",
    f"train.candidates={json.dumps(DP_CANDIDATES, separators=(',', ':'))}",
    # DP noise on 2,100 training rows can move a model across the fairness limit; these tests
    # are about the privacy accounting, not that gate.
    "fairness.max_equalized_odds_difference=null",
)  # fmt: skip


@pytest.fixture(scope="module")
def source(tmp_path_factory, adult_sample: pd.DataFrame) -> Path:
    return write_csv(adult_sample, tmp_path_factory.mktemp("src") / "adult.csv")


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dp-training")


def _settings(source: Path, *extra: str) -> list[str]:
    settings = [f"data.source=csv:{source}", *TRAINING, *extra]
    return [arg for setting in settings for arg in ("--set", setting)]


def test_every_candidate_is_a_dp_sgd_release_and_the_model_says_what_it_guarantees(
    capsys, ws, source
) -> None:
    code, summary, err = run_cli(capsys, "--workspace", str(ws), *_settings(source))
    assert code == 0, err
    privacy = summary["privacy"]
    # The preprocessing release (ε 1) and two DP-SGD candidates (ε 1 each), composed.
    assert privacy["mode"] == "training" and privacy["epsilon_spent"] == pytest.approx(3.0)
    assert privacy["model_epsilon"] == pytest.approx(3.0)
    assert privacy["model_delta"] == pytest.approx(2e-5)
    assert privacy["budget_remaining"] == pytest.approx(0.5)
    assert set(privacy["dp_sgd"]) == {"dp-logreg", "mlp"}
    rows = {plan["rows"] for plan in privacy["dp_sgd"].values()}  # the training split's
    assert len(rows) == 1 and 0 < rows.pop() < summary["dataset"]["rows"]
    assert all(plan["noise_multiplier"] > 0 for plan in privacy["dp_sgd"].values())
    assert privacy["statement"].startswith("The model is (3, 2e-05)-DP with respect to the")
    ledger = json.loads((ws / ".trustflow" / "privacy-ledger.json").read_text())
    preprocessing, *training = ledger["entries"]
    assert preprocessing["release"] is not None and preprocessing["training"] is None
    assert sorted(e["release_id"] for e in training) == sorted(privacy["training_releases"])
    assert all(e["training"]["epsilon"] == 1.0 and e["delta"] == 1e-5 for e in training)
    version = client_for(ws).get_model_version("adult-income", summary["model"]["version"])
    assert version.tags["trustflow.privacy.dp_sgd"] == "true"
    assert version.tags["trustflow.privacy.dp_sgd_release"] in privacy["training_releases"]
    card = Path(summary["model_card"].removeprefix("file://")).read_text()
    assert "DP with respect to the" in card and "Opacus" in card


def test_a_rerun_gets_the_same_models_from_the_cache_and_spends_nothing(capsys, ws, source):
    before = json.loads((ws / ".trustflow" / "privacy-ledger.json").read_text())
    code, summary, err = run_cli(capsys, "--workspace", str(ws), *_settings(source))
    assert code == 0, err
    assert summary["privacy"]["epsilon_spent"] == 0.0
    assert summary["privacy"]["model_epsilon"] == pytest.approx(3.0)
    assert json.loads((ws / ".trustflow" / "privacy-ledger.json").read_text()) == before
    assert versions(ws) == ["1"]


def test_training_again_past_the_budget_is_refused_before_reading_data(capsys, ws, source):
    """Another seed means two new DP-SGD releases (ε 2); 0.5 is left."""
    before = _state(ws)
    error = fails_in_one_line(capsys, ws, *_settings(source, "train.seed=7"))
    assert error.startswith("privacy budget exceeded for data set adult")
    assert "spent ε = 3, requested ε = 2, budget ε = 3.5" in error
    assert _state(ws) == before


def test_a_delta_of_one_over_n_is_refused_before_anything_is_spent(capsys, source, tmp_path):
    error = fails_in_one_line(capsys, tmp_path, *_settings(source, "privacy.training.delta=0.001"))
    assert "privacy.training.delta = 0.001 must be below 1/n" in error
    assert not (tmp_path / ".trustflow" / "privacy-ledger.json").exists()


def test_a_kind_dp_sgd_cannot_train_is_a_config_error_naming_it(capsys, source, tmp_path):
    hgb = json.dumps([{"name": "hgb", "kind": "hist_gradient_boosting"}])
    error = fails_in_one_line(capsys, tmp_path, *_settings(source, f"train.candidates={hgb}"))
    assert "'hgb' (hist_gradient_boosting) cannot be trained that way" in error
    assert not (tmp_path / "data").exists()


def test_warm_start_from_a_champion_not_trained_by_dp_sgd_is_refused(
    capsys, tmp_path, adult_sample: pd.DataFrame
) -> None:
    """A network champion trained without DP on an older data version: fine-tuning it would
    carry its rows into the DP model."""
    older = write_csv(adult_sample.head(2500), tmp_path / "older.csv")
    newer = write_csv(adult_sample, tmp_path / "newer.csv")
    mlp = json.dumps([{"name": "mlp", "kind": "mlp", "params": DP_CANDIDATES[1]["params"]}])
    plain = [
        f"data.source=csv:{older}", f"train.candidates={mlp}", "fairness.unmeasured=allow",
        "fairness.max_equalized_odds_difference=null",
    ]  # fmt: skip
    plain = [arg for setting in plain for arg in ("--set", setting)]
    code, summary, err = run_cli(capsys, "--workspace", str(tmp_path), *plain)
    assert code == 0 and summary["model"]["promoted"], err
    error = fails_in_one_line(
        capsys, tmp_path, *_settings(newer, f"train.candidates={mlp}", "privacy.budget=5")
    )
    assert error.startswith("trainer.warm_start: adult-income@champion (models:/adult-income/1)")
    assert "was not trained by DP-SGD" in error and "trainer.warm_start=false" in error
    assert versions(tmp_path) == ["1"]
