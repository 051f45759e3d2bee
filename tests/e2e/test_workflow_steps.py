"""The retrain workflow's shell steps, run here as GitHub's runner would run them
(tests/github_actions.py), with its secrets pointing at a local stack: `trustflow server up`
(Prefect and MLflow servers and a worker on 127.0.0.1) and `prefect deploy --all`. The job must
pass when the run passes its gates, fail when it does not, and leave the gates' verdicts and the
model card in the job summary."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tests.conftest import FAST_CANDIDATES, SMALL_SAMPLE_FAIRNESS, write_csv
from tests.e2e.processes import BIN, REPO, clean_env, prefect_api
from tests.github_actions import WORKFLOWS, StepResult, run_job

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# A model of its own: the stack is shared with tests/e2e/test_deployments.py.
MODEL = "adult-income-workflow"


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """What actions/checkout leaves: the repository's files (tracked, and new ones not ignored)
    in a git work tree, with this .venv in place of setup-python + `make install`'s download."""
    root = tmp_path_factory.mktemp("checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    )  # fmt: skip
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)  # mtimes kept: `make install` finds it done
    (root / ".venv").symlink_to(REPO / ".venv")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root


def _retrain(
    sqlite_stack, checkout: Path, tmp_path: Path, overrides: list[str]
) -> tuple[list[StepResult], str]:
    summary = tmp_path / "step-summary.md"
    values = {
        "secrets.PREFECT_API_URL": sqlite_stack["api"],
        "secrets.PREFECT_API_KEY": "",
        "secrets.MLFLOW_TRACKING_URI": sqlite_stack["mlflow"],
        "secrets.MLFLOW_TRACKING_TOKEN": "",
        "inputs.overrides": " ".join(overrides),
        "inputs.timeout || '7200'": "600",
    }
    env = clean_env(GITHUB_STEP_SUMMARY=str(summary), HOME=str(tmp_path))
    steps = run_job(WORKFLOWS / "retrain.yml", "retrain", values, checkout, env)
    return steps, summary.read_text() if summary.exists() else ""


def _champion(client: MlflowClient) -> str | None:
    try:
        return str(client.get_model_version_by_alias(MODEL, "champion").version)
    except MlflowException:
        return None


def _data_overrides(adult_sample, tmp_path: Path) -> list[str]:
    source = write_csv(adult_sample, tmp_path / "adult.csv")
    sample = [FAST_CANDIDATES, SMALL_SAMPLE_FAIRNESS]
    return [f"data.source=csv:{source}", *sample, f"registry.model_name={MODEL}"]


def test_the_job_passes_and_writes_the_gates_and_the_model_card(
    sqlite_stack, checkout, adult_sample, tmp_path
):
    steps, summary = _retrain(
        sqlite_stack, checkout, tmp_path, _data_overrides(adult_sample, tmp_path)
    )
    failed = [s for s in steps if s.returncode != 0]
    assert not failed, "\n".join(f"{s.name}: {s.stdout}{s.stderr}" for s in failed)
    assert [s.name for s in steps][-1].startswith("Run train-tabular")
    client = MlflowClient(tracking_uri=sqlite_stack["mlflow"], registry_uri=sqlite_stack["mlflow"])
    champion = _champion(client)
    assert champion is not None
    assert "## train-tabular/train-tabular: COMPLETED" in summary
    assert f"| {MODEL} v{champion} |" in summary
    assert "| fairness | yes |" in summary and "| onnx parity | yes |" in summary
    assert "<details><summary>model_card" in summary
    assert f"# Model card: {MODEL} v{champion}" in summary


def test_a_run_that_fails_a_gate_fails_the_job_and_keeps_the_champion(
    sqlite_stack, checkout, adult_sample, tmp_path
) -> None:
    client = MlflowClient(tracking_uri=sqlite_stack["mlflow"], registry_uri=sqlite_stack["mlflow"])
    before = _champion(client)
    overrides = [*_data_overrides(adult_sample, tmp_path), "train.seed=11",
                 "fairness.max_equalized_odds_difference=0.0001"]  # fmt: skip
    steps, summary = _retrain(sqlite_stack, checkout, tmp_path, overrides)
    assert [s.returncode for s in steps[:-1]] == [0] * (len(steps) - 1)
    assert steps[-1].returncode == 1, steps[-1].stdout + steps[-1].stderr
    assert "train-tabular/train-tabular: FAILED" in summary
    assert "| fairness | **no** |" in summary
    assert _champion(client) == before


def test_trigger_refuses_a_bad_override_in_one_line_before_any_run_is_created(sqlite_stack) -> None:
    count = {"json": {"flows": {"name": {"any_": ["train-tabular"]}}}}
    before = prefect_api("POST", f"{sqlite_stack['api']}/flow_runs/count", **count).json()
    env = clean_env(PREFECT_API_URL=sqlite_stack["api"])
    done = subprocess.run(
        [str(BIN / "trustflow"), "trigger", "--set", "split.test_size=1.5"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "split.test_size" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert prefect_api("POST", f"{sqlite_stack['api']}/flow_runs/count", **count).json() == before
