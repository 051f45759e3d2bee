"""`trustflow server up|status|down` as a person runs it: real Prefect and MLflow servers and a
Prefect worker on 127.0.0.1, started in the background for one workspace and stopped again."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flows.servers import process_alive
from tests.e2e.processes import BIN, clean_env, free_port, prefect_api

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def _server(ws: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "trustflow"), "server", *args, "--workspace", str(ws)],
        capture_output=True, text=True, timeout=240, env=clean_env(),
    )  # fmt: skip


@pytest.fixture(scope="module")
def started(tmp_path_factory) -> Iterator[tuple[Path, dict]]:
    ws = tmp_path_factory.mktemp("server-ws")
    ports = ["--prefect-port", str(free_port()), "--mlflow-port", str(free_port())]
    up = _server(ws, "up", "--json", *ports)
    try:
        assert up.returncode == 0, up.stderr
        yield ws, json.loads(up.stdout)
    finally:
        _server(ws, "down")


def test_up_starts_healthy_servers_and_an_online_worker(started) -> None:
    ws, report = started
    services = {s["name"]: s for s in report["services"]}
    assert set(services) == {"prefect", "mlflow", "worker"}
    assert all(s["running"] and s["healthy"] for s in services.values())
    api = services["prefect"]["url"] + "/api"
    workers = prefect_api("POST", f"{api}/work_pools/trustflow-process/workers/filter", json={})
    workers = workers.json()
    assert any(w["status"] == "ONLINE" for w in workers), workers
    assert httpx.get(services["mlflow"]["url"] + "/health", timeout=10).status_code == 200
    # The MLflow server serves the workspace's own store.
    assert (ws / "mlflow.db").is_file()
    status = _server(ws, "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["services"] == report["services"]


def test_a_second_up_and_a_busy_port_are_one_line_errors(started, tmp_path) -> None:
    ws, _ = started
    again = _server(ws, "up")
    assert again.returncode == 1 and "already running in" in again.stderr
    other = tmp_path / "other"
    other.mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        refused = _server(other, "up", "--prefect-port", str(port), "--mlflow-port",
                          str(free_port()))  # fmt: skip
    assert refused.returncode == 1
    assert (
        refused.stderr.strip()
        == f"error: Prefect port 127.0.0.1:{port} is in use; choose another port"
    )
    assert not (other / ".trustflow" / "servers" / "servers.json").exists()


def test_down_stops_every_process(tmp_path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    up = _server(ws, "up", "--json", "--prefect-port", str(free_port()),
                 "--mlflow-port", str(free_port()))  # fmt: skip
    assert up.returncode == 0, up.stderr
    pids = [s["pid"] for s in json.loads(up.stdout)["services"]]
    down = _server(ws, "down")
    assert down.returncode == 0 and down.stdout.strip() == "stopped: worker, mlflow, prefect"
    assert not any(process_alive(pid) for pid in pids)
    status = _server(ws, "status")
    assert status.returncode == 1 and "no servers recorded" in status.stdout


def test_an_unreachable_database_is_one_line_and_nothing_starts(tmp_path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    closed = free_port()  # nothing listens there
    refused = _server(ws, "up", "--database-url", f"postgresql://postgres@127.0.0.1:{closed}/x")
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: cannot reach PostgreSQL at postgres@127.0.0.1:{closed}:"
    )
    assert not (ws / ".trustflow" / "servers" / "servers.json").exists()
    bad = _server(ws, "up", "--database-url", "mysql://root@127.0.0.1/x")
    assert bad.returncode == 1 and "expected postgresql://USER@HOST:PORT/NAME" in bad.stderr


def test_a_pool_without_its_worker_refuses_deployments_and_status_says_so(started) -> None:
    """Last in this module: it stops the worker. A worker recreates its pool when someone deletes
    it, so the pool can only go missing with the worker gone too; then `prefect deploy` refuses
    the deployments instead of creating ones no worker would ever run."""
    ws, report = started
    services = {s["name"]: s for s in report["services"]}
    api = services["prefect"]["url"] + "/api"
    worker = services["worker"]["pid"]
    # A worker winds down its runs on SIGTERM, which can take a while on a busy machine; what
    # matters here is that it is gone, so it is killed if it outlasts the wait.
    for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
        if process_alive(worker):
            os.kill(worker, sig)
        deadline = time.monotonic() + wait
        while process_alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
    assert not process_alive(worker)
    assert prefect_api("DELETE", f"{api}/work_pools/trustflow-process").status_code == 204

    status = _server(ws, "status")
    assert status.returncode == 1
    assert "worker   stopped" in status.stdout, status.stdout

    deploy = subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], cwd=REPO,
        capture_output=True, text=True, timeout=240, env=clean_env(PREFECT_API_URL=api),
    )  # fmt: skip
    assert deploy.returncode == 1
    assert "references work pool 'trustflow-process' which" in " ".join(deploy.stdout.split())
    assert prefect_api("POST", f"{api}/deployments/filter", json={}).json() == []
