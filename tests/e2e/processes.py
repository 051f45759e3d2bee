"""Starting real servers for e2e tests: free ports, a clean environment, readiness waits, and
pointing MLflow's client at one store for a block."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import mlflow

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without Prefect/MLflow settings the tests may have made."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return {**env, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **extra}


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not come up in {timeout}s")


def prefect_api(method: str, url: str, **kwargs) -> httpx.Response:
    """One request to a Prefect server, retried with backoff on 429/502/503 as Prefect's own
    client does: its server answers 503 while its database is busy (SQLite locked by a run's
    writes, or a worker's last heartbeat)."""
    for delay in (0.5, 1, 2, 4, 8, 16, None):
        response = httpx.request(method, url, timeout=30, **kwargs)
        if response.status_code not in (429, 502, 503) or delay is None:
            return response
        time.sleep(delay)
    raise AssertionError("unreachable")


@contextmanager
def pointed_at(uri: str) -> Iterator[None]:
    """MLflow's global store, for this block only (set_tracking_uri also exports the URI, which
    would send later tests' runs here)."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before or "")
        mlflow.set_registry_uri(before or "")
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
            os.environ.pop("MLFLOW_REGISTRY_URI", None)


@contextmanager
def deployed_stack(ws: Path, database_url: str | None = None) -> Iterator[dict[str, str]]:
    """As a team sets up: `trustflow server up` in ``ws`` (Prefect and MLflow servers and a worker
    on 127.0.0.1, on SQLite or ``database_url``), then `prefect deploy --all` from prefect.yaml.
    Yields the Prefect API and MLflow URLs and the workspace; stops everything after."""
    options = ["--prefect-port", str(free_port()), "--mlflow-port", str(free_port())]
    if database_url:
        options += ["--database-url", database_url]
    command = [str(BIN / "trustflow"), "server"]
    up = subprocess.run([*command, "up", "--json", "--workspace", str(ws), *options],
                        capture_output=True, text=True, timeout=240, env=clean_env())  # fmt: skip
    try:
        assert up.returncode == 0, up.stderr
        urls = {s["name"]: s["url"] for s in json.loads(up.stdout)["services"]}
        api = f"{urls['prefect']}/api"
        deploy = subprocess.run(
            [str(BIN / "prefect"), "--no-prompt", "deploy", "--all"],
            cwd=REPO, capture_output=True, text=True, timeout=240,
            env=clean_env(PREFECT_API_URL=api),
        )  # fmt: skip
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        yield {"api": api, "mlflow": urls["mlflow"], "workspace": str(ws)}
    finally:
        subprocess.run([*command, "down", "--workspace", str(ws)], timeout=120, env=clean_env())
