"""`trustflow run` as a user runs it: a subprocess on the full bundled data, fresh workspace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TRUSTFLOW = Path(sys.executable).with_name("trustflow")
REQUIRED = {
    "state": None,
    "dataset": {"name", "md5", "rows"},
    "model": {"name", "version", "alias", "candidate"},
    "metrics": {"roc_auc", "accuracy", "f1", "log_loss"},
    "mlflow": {"tracking_uri", "run_id"},
    "onnx": {"opset", "size_bytes", "max_abs_diff", "label_agreement", "passed",
             "latency_us_single_row"},
    "gates": {"logreg", "hgb", "ebm", "hgb-fair", "mlp"},
    "fairness": {"sex", "race", "sex & race"},
    "model_card": None,
}  # fmt: skip


def _trustflow(workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return subprocess.run(
        [str(TRUSTFLOW), "run", "--workspace", str(workspace), *args],
        capture_output=True, text=True, timeout=600, env=env, cwd=workspace,
    )  # fmt: skip


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fresh-workspace")


@pytest.fixture(scope="module")
def first_run(workspace: Path) -> subprocess.CompletedProcess[str]:
    return _trustflow(workspace, "--json", "--quiet")


def test_json_run_on_bundled_data_registers_a_good_champion(first_run, workspace) -> None:
    assert first_run.returncode == 0, first_run.stderr
    summary = json.loads(first_run.stdout)  # stdout is exactly one JSON object
    for section, keys in REQUIRED.items():
        assert section in summary
        if keys:
            assert keys <= set(summary[section])
    assert summary["state"] == "COMPLETED"
    assert summary["dataset"]["rows"] == 45_222  # 48,842 rows less 3,620 with missing values
    assert summary["model"] == summary["model"] | {"name": "adult-income", "alias": "champion"}
    assert summary["metrics"]["roc_auc"] >= 0.90  # the quality bar of the default run
    assert summary["onnx"]["passed"] and summary["onnx"]["max_abs_diff"] <= 1e-4
    # The champion passed every gate; the mitigated candidate cannot, having no ONNX form.
    assert summary["gates"][summary["model"]["candidate"]] == "passed"
    assert summary["fairness"]["sex"]["passed"] and summary["fairness"]["sex"]["gated"]
    assert "no ONNX form for 'hgb-fair'" in summary["gates"]["hgb-fair"]
    assert summary["model_card"].endswith(
        f"model_card/adult-income-v{summary['model']['version']}.md"
    )
    assert first_run.stderr.strip() == ""  # --quiet: no progress, warnings or tracebacks

    uri = summary["mlflow"]["tracking_uri"]
    assert uri == f"sqlite:///{workspace}/mlflow.db"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version_by_alias("adult-income", "champion")
    assert str(version.version) == summary["model"]["version"]
    assert version.tags["trustflow.data.md5"] == summary["dataset"]["md5"]
    run = client.get_run(summary["mlflow"]["run_id"])
    assert run.data.tags["trustflow.data.dvc_file"] == "data/adult.parquet.dvc"
    assert (workspace / "data" / "adult.parquet.dvc").is_file()


def test_people_see_one_line_per_stage_and_a_summary(first_run, workspace) -> None:
    done = _trustflow(workspace)  # second run: served from cache
    assert done.returncode == 0, done.stderr
    stages = ["workspace", "tracking", "ingest", "validate", "version", "split", "preprocess",
              "train", "evaluate", "export", "audit", "explain", "track", "register", "card",
              "promote"]  # fmt: skip
    lines = done.stderr.splitlines()
    for stage in stages:
        assert sum(stage in line.split()[:2] for line in lines) == 1, done.stderr
    assert "(cached)" in done.stderr
    for noise in ("Traceback", "WARNING", "INFO", "Warning"):
        assert noise not in done.stderr + done.stdout
    assert "adult-income v1 @champion" in done.stdout
