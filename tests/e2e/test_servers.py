"""The scale-out path from the README: `trustflow run` against a real Prefect server and a real
MLflow tracking server, both started on 127.0.0.1 for this test."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import FAST_CANDIDATES, write_csv
from tests.e2e.processes import BIN, clean_env, free_port, wait_until_up

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[tuple[str, str]]:
    home = tmp_path_factory.mktemp("servers")
    prefect_port, mlflow_port = free_port(), free_port()
    prefect = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start",
         "--host", "127.0.0.1", "--port", str(prefect_port)],
        env=clean_env(PREFECT_HOME=str(home / "prefect")),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    mlflow = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
         "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
         "--artifacts-destination", str(home / "artifacts"), "--workers", "1"],
        env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    prefect_api = f"http://127.0.0.1:{prefect_port}/api"
    mlflow_uri = f"http://127.0.0.1:{mlflow_port}"
    try:
        wait_until_up(f"{prefect_api}/health", prefect)
        wait_until_up(f"{mlflow_uri}/health", mlflow)
        yield prefect_api, mlflow_uri
    finally:
        for process in (prefect, mlflow):
            process.terminate()
        for process in (prefect, mlflow):
            process.wait(timeout=30)


def test_run_is_recorded_in_both_servers(servers, adult_sample, tmp_path) -> None:
    prefect_api, mlflow_uri = servers
    source = write_csv(adult_sample, tmp_path / "adult.csv")
    workspace = tmp_path / "ws"
    done = subprocess.run(
        [str(BIN / "trustflow"), "run", "--json", "--workspace", str(workspace),
         "--set", f"data.source=csv:{source}", "--set", FAST_CANDIDATES],
        env=clean_env(PREFECT_API_URL=prefect_api, MLFLOW_TRACKING_URI=mlflow_uri),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["mlflow"]["tracking_uri"] == mlflow_uri
    assert not (workspace / "mlflow.db").exists()  # the override replaced the local store

    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    version = client.get_model_version_by_alias("adult-income", "champion")
    assert str(version.version) == summary["model"]["version"]
    assert version.tags["trustflow.data.md5"] == summary["dataset"]["md5"]

    flows = httpx.post(f"{prefect_api}/flow_runs/filter", json={}, timeout=10).json()
    finished = [f for f in flows if f["state"]["type"] == "COMPLETED"]
    assert len(finished) == 1 and finished[0]["name"]
    names = httpx.post(f"{prefect_api}/flows/filter", json={}, timeout=10).json()
    assert "train-tabular" in {f["name"] for f in names}
