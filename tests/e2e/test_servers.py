"""The scale-out path from the README: `trustflow run` against a real Prefect server and a real
MLflow tracking server, both started on 127.0.0.1 for this test."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import SAMPLE_RUN, write_csv
from tests.e2e.processes import BIN, clean_env, free_port, wait_until_up

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _mlflow_server(port: int, home: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
         "--artifacts-destination", str(home / "artifacts"), "--workers", "1"],
        # (no job runner: as `trustflow server up` starts it, and one process to stop)
        env=clean_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _stop_server_after(stage: str, run: subprocess.Popen, server: subprocess.Popen) -> str:
    """Stop ``server`` as soon as ``run`` prints the line of ``stage`` (people's stage lines
    tell where a run is); the run's whole stderr once it ends."""
    seen = []
    for line in run.stderr:  # type: ignore[union-attr]
        seen.append(line)
        if stage in line:
            break
    server.terminate()
    server.wait(timeout=30)
    _, err = run.communicate(timeout=600)
    return "".join(seen) + err


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
    mlflow = _mlflow_server(mlflow_port, home)
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
         "--set", f"data.source=csv:{source}", *SAMPLE_RUN],
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


def test_a_tracking_server_lost_mid_run_fails_in_one_line_and_leaves_the_champion(
    servers, adult_sample, tmp_path
) -> None:
    prefect_api, _ = servers
    port, home = free_port(), tmp_path / "mlflow"
    uri = f"http://127.0.0.1:{port}"
    workspace = tmp_path / "ws"

    def trustflow_run(data: Path, *output: str) -> subprocess.Popen:
        return subprocess.Popen(
            [str(BIN / "trustflow"), "run", *output, "--workspace", str(workspace),
             "--set", f"data.source=csv:{data}", *SAMPLE_RUN],
            env=clean_env(PREFECT_API_URL=prefect_api, MLFLOW_TRACKING_URI=uri),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def champion() -> tuple[str, int]:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        versions = client.search_model_versions("name='adult-income'")
        return client.get_model_version_by_alias("adult-income", "champion").version, len(versions)

    mlflow = _mlflow_server(port, home)
    try:
        wait_until_up(f"{uri}/health", mlflow)
        first = trustflow_run(write_csv(adult_sample, tmp_path / "v1.csv"), "--json")
        assert first.wait(timeout=600) == 0, first.stderr.read()  # type: ignore[union-attr]
        assert champion() == ("1", 1)

        # New data, so this run would register v2; the server goes away while it trains. (The
        # stage lines people see tell when training starts.)
        second = trustflow_run(write_csv(adult_sample.iloc[:2500], tmp_path / "v2.csv"))
        err = _stop_server_after(" split ", second, mlflow)
    finally:
        mlflow.terminate()
    assert second.returncode == 1, err
    assert " train " not in err.split(" split ")[0]  # it was killed before training
    assert f"error: MLflow tracking server {uri} stopped answering during the track stage" in err
    assert "no alias was moved" in err and "Traceback" not in err, err

    mlflow = _mlflow_server(port, home)  # the same store, back again
    try:
        wait_until_up(f"{uri}/health", mlflow)
        assert champion() == ("1", 1)  # no version registered, the alias where it was
    finally:
        mlflow.terminate()
        mlflow.wait(timeout=30)


def test_a_registry_lost_between_registration_and_promotion_moves_no_alias(
    servers, adult_sample, tmp_path
) -> None:
    """v2 is registered; then the server stops before the promote stage can decide. The run
    fails in one line, and once the same store is back the alias is still on v1."""
    prefect_api, _ = servers
    port, home = free_port(), tmp_path / "mlflow"
    uri = f"http://127.0.0.1:{port}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    def trustflow_run(data: Path) -> subprocess.Popen:
        return subprocess.Popen(
            [str(BIN / "trustflow"), "run", "--workspace", str(tmp_path / "ws"),
             "--set", f"data.source=csv:{data}", *SAMPLE_RUN,
             "--set", "fairness.max_equalized_odds_difference=null"],
            env=clean_env(PREFECT_API_URL=prefect_api, MLFLOW_TRACKING_URI=uri),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    mlflow = _mlflow_server(port, home)
    try:
        wait_until_up(f"{uri}/health", mlflow)
        first = trustflow_run(write_csv(adult_sample, tmp_path / "v1.csv"))
        assert first.wait(timeout=600) == 0, first.stderr.read()  # type: ignore[union-attr]
        second = trustflow_run(write_csv(adult_sample.iloc[:2500], tmp_path / "v2.csv"))
        err = _stop_server_after(" register ", second, mlflow)
    finally:
        mlflow.terminate()
    assert "adult-income v2" in err.split(" register ")[1]  # registered before the server went
    assert second.returncode == 1, err
    # No promote stage line (the error line itself may name the promote stage).
    assert not any(line.split()[1:2] == ["promote"] for line in err.splitlines()), err
    assert f"error: MLflow tracking server {uri} stopped answering during the " in err, err
    assert "no alias was moved" in err and "Traceback" not in err, err

    mlflow = _mlflow_server(port, home)
    try:
        wait_until_up(f"{uri}/health", mlflow)
        assert str(client.get_model_version_by_alias("adult-income", "champion").version) == "1"
        assert len(client.search_model_versions("name='adult-income'")) == 2
    finally:
        mlflow.terminate()
        mlflow.wait(timeout=30)
