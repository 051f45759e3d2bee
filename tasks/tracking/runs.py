"""The pipeline run's lifecycle: open, close, record the outcome, and close what a crashed
process left open."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import mlflow
import psutil
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict

from tasks.tracking.store import (
    TRACKING_RETRY_DELAYS,
    configure,
    create_sqlite_store,
    experiment_id_for,
    health_problem,
    is_server,
    sqlite_store_problem,
)
from tasks.tracking.tags import CI_RUN_URL_TAG, FLOW_RUN_TAG, OWNER_TAG, REAPED_BY_TAG
from trustflow.config import (
    TrackingConfig,
)
from trustflow.environment import ci_run_url
from trustflow.errors import StoreDamaged, TrackingUnavailable
from trustflow.workspace import Workspace


class TrackedRun(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    experiment_id: str
    candidate_runs: dict[str, str]
    model_uris: dict[str, str]
    reaped: tuple[str, ...] = ()  # runs a crashed process left RUNNING, marked KILLED by this one


class TrackingTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tracking_uri: str
    experiment_id: str


def open_tracking(cfg: TrackingConfig, ws: Workspace) -> TrackingTarget:
    """Configure MLflow and make sure the experiment exists (a new SQLite store runs its schema
    migrations here, about two seconds)."""
    uri = configure(ws)
    return TrackingTarget(tracking_uri=uri, experiment_id=experiment_id_for(cfg.experiment, ws))


def start_pipeline_run(target: TrackingTarget, run_name: str, tags: dict[str, str]) -> TrackedRun:
    """Open the pipeline's run, then close what crashed runs left open in its experiment."""
    client = MlflowClient()
    run = client.create_run(target.experiment_id, run_name=run_name, tags={**tags, **origin_tags()})
    return TrackedRun(
        run_id=run.info.run_id,
        experiment_id=target.experiment_id,
        candidate_runs={},
        model_uris={},
        reaped=tuple(reap_abandoned(target.experiment_id, run.info.run_id)),
    )


def end_pipeline_run(run_id: str, ok: bool) -> None:
    MlflowClient().set_terminated(run_id, "FINISHED" if ok else "FAILED")


def origin_tags() -> dict[str, str]:
    """Tags every run trustflow opens carries: the process that opened it, the Prefect flow run
    it belongs to and, in CI, the CI run."""
    tags = {OWNER_TAG: run_owner()}
    if flow_run.id:
        tags[FLOW_RUN_TAG] = flow_run.id
    ci = ci_run_url(os.environ)
    if ci:
        tags[CI_RUN_URL_TAG] = ci
    return tags


def run_owner() -> str:
    """``host:pid:start time`` of this process, tagged on every run it opens, so a later run can
    tell a run whose process died (kill -9, power loss) from one that is still going."""
    me = psutil.Process()
    return f"{socket.gethostname()}:{me.pid}:{me.create_time():.3f}"


def _owner_alive(owner: str) -> bool | None:
    """Whether the process named by an OWNER_TAG still runs; None when it ran on another host."""
    host, pid, started = owner.rsplit(":", 2)
    if host != socket.gethostname():
        return None
    try:
        return f"{psutil.Process(int(pid)).create_time():.3f}" == started
    except (psutil.NoSuchProcess, ValueError):
        return False


def reap_abandoned(experiment_id: str, by_run: str) -> list[str]:
    """What a crashed run left behind: its runs still RUNNING become KILLED, with a note, and its
    logged models still PENDING become FAILED, so nothing half-written is reused. Runs of live
    processes and of other hosts are left alone. Returns the runs marked KILLED."""
    client = MlflowClient()
    reaped: list[str] = []
    for run in client.search_runs(
        [experiment_id], "attributes.status = 'RUNNING'", max_results=1000
    ):
        owner = run.data.tags.get(OWNER_TAG)
        if owner is None or _owner_alive(owner) is not False:
            continue
        note = (
            f"Left RUNNING by a process that ended without closing it ({owner}); "
            f"marked KILLED by run {by_run}."
        )
        client.set_tag(run.info.run_id, "mlflow.note.content", note)
        client.set_tag(run.info.run_id, REAPED_BY_TAG, by_run)
        client.set_terminated(run.info.run_id, "KILLED")
        reaped.append(run.info.run_id)
    pending = [
        model
        for model in mlflow.search_logged_models(
            experiment_ids=[experiment_id], output_format="list"
        )
        if model.status == LoggedModelStatus.PENDING
    ]
    for model in pending:
        source = model.source_run_id
        if source is None or client.get_run(source).info.status != "RUNNING":
            client.set_logged_model_tags(model.model_id, {REAPED_BY_TAG: by_run})
            client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
    return reaped


def end_interrupted_runs(tracking_uri: str, note: str) -> list[str]:
    """This process's runs still RUNNING become KILLED, with ``note``, and its logged models
    still PENDING become FAILED: what an interrupted run leaves, closed by the run itself (a
    process killed outright leaves them to reap_abandoned, in the next run). Returns the runs."""
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    me = run_owner()
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    mine = client.search_runs(
        experiments,
        f"attributes.status = 'RUNNING' and tags.`{OWNER_TAG}` = '{me}'",
        max_results=1000,
    )
    for run in mine:
        client.set_tag(run.info.run_id, "mlflow.note.content", note)
        client.set_terminated(run.info.run_id, "KILLED")
    ended = {run.info.run_id for run in mine}
    token = None
    while True:  # this client's store, not MLflow's global one (it may not be set yet)
        page = client.search_logged_models(experiments, max_results=100, page_token=token)
        for model in page:
            if model.status == LoggedModelStatus.PENDING and model.source_run_id in ended:
                client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        token = page.token
        if not token:
            return sorted(ended)


def record_gate_failure(run_id: str, reason: str) -> None:
    client = MlflowClient()
    client.set_tag(run_id, "trustflow.model.promoted", "false")
    client.set_tag(run_id, "trustflow.model.reason", reason)
    client.set_tag(run_id, "mlflow.note.content", reason)


@task(name="tracking-check", cache_policy=NO_CACHE, persist_result=False)
def check_tracking_server(ws: Workspace) -> str:
    """Before any work: a local SQLite store must be whole (quick_check) and a tracking server
    must answer its /health (retried with backoff), or the run stops here with one line."""
    uri = ws.tracking_uri()
    if not is_server(uri):
        problem = sqlite_store_problem(uri)
        path = Path(uri.removeprefix("sqlite:///"))
        if problem is not None:
            raise StoreDamaged(
                f"MLflow store {path} is damaged ({problem}); nothing was run. Restore it from "
                "a backup, or move it aside to start a new, empty store (the runs and "
                "registered models in it would not carry over)"
            )
        if uri.startswith("sqlite:///") and not path.exists():
            create_sqlite_store(ws, path)
            return f"new local store {uri}"
        return f"local store {uri}"
    for delay in (*TRACKING_RETRY_DELAYS, None):
        problem = health_problem(uri)
        if problem is None:
            return f"{uri} answers"
        if delay is not None:
            time.sleep(delay)
    raise TrackingUnavailable(
        f"MLflow tracking server {uri} did not answer after {len(TRACKING_RETRY_DELAYS) + 1} "
        f"attempts over "
        f"{sum(TRACKING_RETRY_DELAYS):g} s ({problem}); nothing was run"
    )
