"""Workspaces are isolated and relocatable: Prefect's local database lives in the workspace, and
a copy runs on its own files, leaving the original byte for byte as it was."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import mlflow.sklearn
import pandas as pd
import pytest

from tasks.tracking.registry import version_model_id
from tests.conftest import SAMPLE_RUN, write_csv
from tests.e2e.processes import pointed_at
from tests.faults.runs import run
from tests.flows.helpers import client_for, versions

pytestmark = [pytest.mark.faults, pytest.mark.e2e]


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_a_copied_workspace_runs_on_its_own_files(
    tmp_path: Path, adult_sample: pd.DataFrame
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    source = write_csv(adult_sample, tmp_path / "adult.csv")
    args = ("--json", "--set", f"data.source=csv:{source}", *SAMPLE_RUN,
            "--set", "fairness.max_equalized_odds_difference=null")  # fmt: skip
    original = tmp_path / "original"
    original.mkdir()
    first = run(original, *args, HOME=str(home))
    assert first.returncode == 0, first.stderr
    # Prefect's local engine kept its database in the workspace, not in ~/.prefect.
    assert (original / ".trustflow" / "prefect" / "prefect.db").is_file()
    assert not (home / ".prefect" / "prefect.db").exists()

    copy = tmp_path / "copy"
    shutil.copytree(original, copy, symlinks=True)
    before = _tree(original)
    frame = adult_sample.copy()
    frame.loc[0, "age"] = str(int(frame.loc[0, "age"]) + 1)  # a new data version
    write_csv(frame, source)
    second = run(copy, *args, HOME=str(home))
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert summary["model"]["new_version"] and versions(copy) == ["1", "2"]

    # The original is untouched: no model files, model card, data version or DVC push.
    assert _tree(original) == before
    assert versions(original) == ["1"]
    # Everything the copy's store points at is inside the copy, and its models load from there.
    client = client_for(copy)
    for number in ("1", "2"):
        model = client.get_logged_model(
            version_model_id(client.get_model_version("adult-income", number))
        )
        assert model.artifact_location.startswith(copy.as_uri() + "/")
    card = client.get_model_version("adult-income", "2").tags["trustflow.model_card"]
    assert card.startswith(copy.as_uri() + "/")
    with pointed_at(f"sqlite:///{copy / 'mlflow.db'}"):
        champion = mlflow.sklearn.load_model("models:/adult-income@champion")
    assert champion.predict(frame.drop(columns="income").head(5).replace("?", None)).shape == (5,)
    pushed = {p.name for p in (copy / ".trustflow" / "dvc-remote").rglob("*") if p.is_file()}
    assert summary["dataset"]["md5"][2:] in pushed
