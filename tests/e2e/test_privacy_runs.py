"""Two `trustflow run` processes started at the same moment against one privacy ledger (two
workspaces, as two users sharing a data set's budget): the budget allows one release, so exactly
one run completes and the other is refused; the ledger holds one release."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import FAST_CANDIDATES, write_csv
from tests.e2e.processes import BIN, clean_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _race(tmp_path: Path, settings_for) -> list[tuple[int, str, str]]:  # type: ignore[no-untyped-def]
    """Start `trustflow run` as alice and bob at once, each in its own workspace; their
    (exit code, stdout, stderr)."""
    runs = []
    for label in ("alice", "bob"):
        workspace = tmp_path / label
        workspace.mkdir()
        args = [arg for setting in settings_for(label) for arg in ("--set", setting)]
        runs.append(
            subprocess.Popen(
                [str(BIN / "trustflow"), "run", "--json", "--workspace", str(workspace), *args],
                cwd=workspace,
                env=clean_env(),
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    results = []
    for run in runs:
        out, err = run.communicate(timeout=300)
        results.append((run.returncode, out, err))
    assert sorted(code for code, _, _ in results) == [0, 1], results
    return results


def test_two_runs_at_once_cannot_overspend_a_shared_budget(tmp_path, adult_sample: pd.DataFrame):
    source = write_csv(adult_sample, tmp_path / "adult.csv")
    ledger = tmp_path / "shared-ledger.json"
    results = _race(
        tmp_path,
        lambda label: [
            f"data.source=csv:{source}",
            FAST_CANDIDATES,
            "privacy.mode=preprocessing",
            "privacy.epsilon=1",
            "privacy.budget=1.5",
            f"privacy.release={label}",
            f"privacy.ledger={ledger}",
            "fairness.max_equalized_odds_difference=null",
        ],
    )
    refused = next(json.loads(out) for code, out, _ in results if code == 1)
    assert refused["error_type"] == "PrivacyBudgetExceeded"
    assert "spent ε = 1, requested ε = 1, budget ε = 1.5" in refused["error"]
    done = next(json.loads(out) for code, out, _ in results if code == 0)
    entries = json.loads(Path(ledger).read_text())["entries"]
    assert [e["release_id"] for e in entries] == [done["privacy"]["release_id"]]


def test_two_dp_sgd_runs_at_once_cannot_overspend_a_shared_budget(
    tmp_path, adult_sample: pd.DataFrame
):
    """privacy.mode: training. Both runs share the preprocessing release (same rows and
    settings); the budget then allows one DP-SGD training, not two."""
    source = write_csv(adult_sample, tmp_path / "adult.csv")
    ledger = tmp_path / "shared-ledger.json"
    candidate = [
        {"name": "dp-logreg", "kind": "dp_logistic_regression",
         "params": {"max_epochs": 2, "batch_size": 256}}
    ]  # fmt: skip
    results = _race(
        tmp_path,
        lambda _: [
            f"data.source=csv:{source}",
            f"train.candidates={json.dumps(candidate)}",
            "privacy.mode=training",
            "privacy.budget=2.5",
            f"privacy.ledger={ledger}",
            "fairness.max_equalized_odds_difference=null",
            "fairness.unmeasured=allow",
        ],
    )
    refused = next(json.loads(out) for code, out, _ in results if code == 1)
    assert refused["error_type"] == "PrivacyBudgetExceeded", refused
    assert "spent ε = 2, requested ε = 1, budget ε = 2.5" in refused["error"]
    done = next(json.loads(out) for code, out, _ in results if code == 0)
    entries = json.loads(Path(ledger).read_text())["entries"]
    assert [e["release_id"] for e in entries] == [
        done["privacy"]["release_id"],
        *done["privacy"]["training_releases"],
    ]
    assert sum(e["epsilon"] for e in entries) == 2.0
