"""Deployments as people use them: `trustflow server up` (Prefect server, MLflow server, worker on
127.0.0.1), `prefect deploy --all` from prefect.yaml, then runs triggered through the API exactly
as the UI's Run button does (POST create_flow_run with the form's parameters). The worker runs
them; the model versions land in the MLflow server. Once with both servers on SQLite, once on
PostgreSQL (127.0.0.1:5432, databases made for the test and dropped after)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import FAST_CANDIDATE_LIST as FAST
from tests.conftest import SAMPLE_RUN, write_csv
from tests.e2e.processes import deployed_stack, prefect_api
from tests.faults.runs import start_run

SAMPLE_FAIRNESS = {"unmeasured": "allow"}  # as SAMPLE_RUN sets it: race is too thin to measure

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

POSTGRES = "postgresql://postgres@127.0.0.1:5432"


def _drop_databases(name: str) -> None:
    import psycopg2

    connection = psycopg2.connect(f"{POSTGRES}/postgres", connect_timeout=5)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            for suffix in ("prefect", "mlflow"):
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}_{suffix}" WITH (FORCE)')
    finally:
        connection.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def deployed(request, tmp_path_factory) -> Iterator[dict[str, str]]:
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_stack")
        return
    database = f"trustflow_test_{uuid.uuid4().hex[:8]}"
    try:
        with deployed_stack(tmp_path_factory.mktemp("deploy-ws"), f"{POSTGRES}/{database}") as urls:
            yield urls
    finally:
        _drop_databases(database)


def _deployment(api: str, flow: str = "train-tabular") -> dict:
    response = prefect_api("GET", f"{api}/deployments/name/{flow}/{flow}")
    assert response.status_code == 200, response.text
    return response.json()


def test_the_deployment_carries_its_schedule_limit_and_typed_form(deployed) -> None:
    deployment = _deployment(deployed["api"])
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 3 * * 1"]
    assert deployment["global_concurrency_limit"]["limit"] == 1
    assert deployment["enforce_parameter_schema"]
    assert "TabularConfig" in deployment["parameter_openapi_schema"]["definitions"]
    assert deployment["work_pool_name"] == "trustflow-process"


def _trigger(api: str, parameters: dict, flow: str = "train-tabular") -> str:
    deployment = _deployment(api, flow)
    created = prefect_api("POST", f"{api}/deployments/{deployment['id']}/create_flow_run",
                          json={"parameters": parameters})  # fmt: skip
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _finished(api: str, run_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = prefect_api("GET", f"{api}/flow_runs/{run_id}").json()
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        time.sleep(0.5)
    raise AssertionError(f"flow run {run_id} did not finish in {timeout:.0f} s")


def test_a_run_triggered_like_the_ui_completes_on_the_worker(deployed, adult_sample, tmp_path):
    source = write_csv(adult_sample, tmp_path / "adult.csv")
    api = deployed["api"]
    parameters = {
        "config": {
            "data": {"source": f"csv:{source}"},
            "train": {"candidates": FAST},
            "fairness": SAMPLE_FAIRNESS,
        },
        "workspace": deployed["workspace"],
    }
    triggered = time.monotonic()
    run_id = _trigger(api, parameters)
    started_after = None
    while started_after is None and time.monotonic() - triggered < 120:
        state = prefect_api("GET", f"{api}/flow_runs/{run_id}").json()["state"]["type"]
        if state != "SCHEDULED" and state != "PENDING":
            started_after = time.monotonic() - triggered
        time.sleep(0.2)
    run = _finished(api, run_id)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    print(f"trigger to running: {started_after:.1f} s")  # quoted in the closing note
    client = MlflowClient(tracking_uri=deployed["mlflow"], registry_uri=deployed["mlflow"])
    version = client.get_model_version_by_alias("adult-income", "champion")
    assert version.tags["trustflow.fairness.passed"] == "true"
    mlflow_run = client.get_run(version.tags["trustflow.run_id"])
    assert mlflow_run.data.tags["trustflow.data.md5"] == version.tags["trustflow.data.md5"]


def test_two_runs_at_once_take_turns_on_the_alias(deployed, adult_sample, tmp_path) -> None:
    """The deployment's concurrency limit of 1: both runs complete, never at the same time."""
    api = deployed["api"]
    runs = []
    for seed in (7, 8):  # other models than the first test's, so new versions are registered
        source = write_csv(adult_sample, tmp_path / f"adult-{seed}.csv")
        config = {"data": {"source": f"csv:{source}"}, "fairness": SAMPLE_FAIRNESS,
                  "train": {"candidates": FAST, "seed": seed}}  # fmt: skip
        runs.append(_trigger(api, {"config": config, "workspace": deployed["workspace"]}))
    finished = [_finished(api, run_id, timeout=400) for run_id in runs]
    assert [run["state"]["type"] for run in finished] == ["COMPLETED", "COMPLETED"]
    first, second = sorted(finished, key=lambda run: run["start_time"])
    assert first["end_time"] <= second["start_time"], "the two runs overlapped"
    client = MlflowClient(tracking_uri=deployed["mlflow"], registry_uri=deployed["mlflow"])
    champion = client.get_model_version_by_alias("adult-income", "champion")
    assert champion.tags["trustflow.fairness.passed"] == "true"


def test_deploy_model_from_the_ui_writes_the_champions_manifests(deployed, tmp_path) -> None:
    """The deploy-model deployment, triggered like the UI's Run button, on the champion the
    runs above registered in the MLflow server."""
    api, out = deployed["api"], tmp_path / "k8s"
    parameters = {"target": "kubernetes", "out": str(out), "apply": False,
                  "workspace": deployed["workspace"]}  # fmt: skip
    run = _finished(api, _trigger(api, parameters, "deploy-model"))
    assert run["state"]["type"] == "COMPLETED", run["state"]
    client = MlflowClient(tracking_uri=deployed["mlflow"], registry_uri=deployed["mlflow"])
    champion = client.get_model_version_by_alias("adult-income", "champion")
    assert champion.tags["trustflow.deployed.kubernetes"] == str(out)
    manifests = (out / "manifests.yaml").read_text()
    assert f"image: adult-income:{champion.version}" in manifests
    wrong = prefect_api(
        "POST",
        f"{api}/deployments/{_deployment(api, 'deploy-model')['id']}/create_flow_run",
        json={"parameters": {"target": "helm"}},
    )
    assert wrong.status_code == 409 and "'helm' is not one of" in wrong.json()["detail"]


def test_an_invalid_parameter_is_refused_with_the_schema_message(deployed) -> None:
    api = deployed["api"]
    deployment = _deployment(api)
    refused = prefect_api(
        "POST",
        f"{api}/deployments/{deployment['id']}/create_flow_run",
        json={"parameters": {"config": {"split": {"test_size": 5}}}},
    )
    assert refused.status_code == 409
    assert "config.split.test_size" in refused.json()["detail"]
    assert "5 is greater than or equal to the maximum of 1" in refused.json()["detail"]


def test_four_cli_runs_at_once_against_the_servers_all_complete(deployed, sample_csv, tmp_path):
    """The fault suite's N = 4 concurrency test (tests/faults/test_concurrency.py) against the
    servers instead of a workspace's own SQLite stores: four `trustflow run` started together on
    one workspace, with PREFECT_API_URL and MLFLOW_TRACKING_URI set as a team would. None dies
    on the database; the later ones queue on the workspace lock; one version takes the alias."""
    ws = tmp_path / "ws"
    ws.mkdir()
    model = f"adult-income-four-{uuid.uuid4().hex[:6]}"  # a registry of its own in the server
    args = ("--json", "--set", f"data.source=csv:{sample_csv}", *SAMPLE_RUN,
            "--set", f"registry.model_name={model}")  # fmt: skip
    servers = {"PREFECT_API_URL": deployed["api"], "MLFLOW_TRACKING_URI": deployed["mlflow"]}
    processes = [start_run(ws, *args, **servers) for _ in range(4)]
    results = [(process, *process.communicate(timeout=1200)) for process in processes]

    for process, out, err in results:
        assert process.returncode == 0, err
        assert json.loads(out)["state"] == "COMPLETED"
    waited = [err for _, _, err in results if "waiting for another run in this workspace" in err]
    assert len(waited) >= 3 and all("(pid " in err for err in waited)
    client = MlflowClient(tracking_uri=deployed["mlflow"], registry_uri=deployed["mlflow"])
    assert [v.version for v in client.search_model_versions(f"name='{model}'")] == ["1"]
    assert client.get_model_version_by_alias(model, "champion").version == "1"
    assert not (ws / "mlflow.db").exists()  # the server's store, not a local one
