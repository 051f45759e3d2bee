"""A model registered by a real pipeline run, and `trustflow serve` on it as a real process:
shared by the serving tests (the `trained` fixture in tests/conftest.py trains it once)."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from tests.conftest import SAMPLE_RUN, write_csv
from tests.e2e.processes import BIN, clean_env, free_port, pointed_at, wait_until_up
from trustflow.config import TabularConfig
from trustflow.data.validate import validate_frame

MODEL = "adult-income"


@dataclass
class Trained:
    workspace: Path
    tracking_uri: str
    version: str
    rows: pd.DataFrame  # feature columns only, as a client sends them
    native: object  # the registered scikit-learn pipeline
    summary: dict  # the run's --json summary

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)


def train_champion(home: Path, adult_sample: pd.DataFrame, *settings: str) -> Trained:
    """One pipeline run (sample data, fast candidates, and ``settings``: more ``--set``
    arguments) registers the champion to serve."""
    source = write_csv(adult_sample, home / "adult.csv")
    workspace = home / "ws"
    done = subprocess.run(
        [str(BIN / "trustflow"), "run", "--json", "--workspace", str(workspace),
         "--set", f"data.source=csv:{source}", *SAMPLE_RUN, *settings],
        env=clean_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    uri = f"sqlite:///{workspace / 'mlflow.db'}"
    with pointed_at(uri):
        native = mlflow.sklearn.load_model(f"models:/{MODEL}/{summary['model']['version']}")
    typed, _ = validate_frame(adult_sample, TabularConfig().data.dataset, "impute", "sample")
    rows = typed.drop(columns=["income"]).head(300)  # some cells missing, as clients send them
    assert rows.isna().any().any()
    return Trained(workspace, uri, summary["model"]["version"], rows, native, summary)


@dataclass
class Server:
    url: str
    process: subprocess.Popen[str]

    def post(self, path: str, **kwargs) -> httpx.Response:
        return httpx.post(self.url + path, timeout=30, **kwargs)

    def get(self, path: str, **kwargs) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kwargs)


@contextmanager
def serving(trained: Trained, model: str, *args: str, **env: str) -> Iterator[Server]:
    port = free_port()
    process = subprocess.Popen(
        [str(BIN / "trustflow"), "serve", "--model", model, "--port", str(port),
         "--workspace", str(trained.workspace), *args],
        env=clean_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    server = Server(f"http://127.0.0.1:{port}", process)
    try:
        wait_until_up(server.url + "/readyz", process)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)
        # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught.
        assert process.returncode in (0, -signal.SIGTERM), (
            process.stderr.read() if process.stderr else ""
        )
