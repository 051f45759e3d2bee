"""registry.announce_to: when the champion changes, the flow sends GitHub's repository_dispatch
(champion-changed, with the model's URI) that starts .github/workflows/release.yml. GitHub is not
reachable here, so GITHUB_API_URL points at an HTTP server on 127.0.0.1 that records what it is
sent and answers as GitHub does (204, or 401 with GitHub's error body)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from flows.tabular import run_pipeline
from tasks.tracking.tags import ANNOUNCED_TAG
from tests.conftest import small_config
from tests.flows.helpers import champion, client_for, run_cli
from trustflow.workspace import Workspace

REPOSITORY = "acme/trustflow"
# A 3,000-row sample's splits can fail the fairness gate; it is not what this is about.
SETTINGS = ("fairness.max_equalized_odds_difference=null", f"registry.announce_to={REPOSITORY}")


class GitHubStandIn(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[dict[str, Any]] = []
        self.answer: tuple[int, dict[str, str] | None] = (204, None)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: GitHubStandIn

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(
            {"path": self.path, "headers": dict(self.headers), "body": json.loads(body)}
        )
        status, payload = self.server.answer
        data = json.dumps(payload).encode() if payload else b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def github() -> Iterator[GitHubStandIn]:
    server = GitHubStandIn()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = {"GITHUB_API_URL": server.url, "GITHUB_TOKEN": "test-token"}
    with mock.patch.dict(os.environ, env):
        yield server
    server.shutdown()
    server.server_close()


def _announced(ws: Workspace, run_id: str) -> str:
    return client_for(ws.root).get_run(run_id).data.tags[ANNOUNCED_TAG]


def test_a_new_champion_starts_the_release_workflow_and_an_unchanged_one_does_not(
    github: GitHubStandIn, sample_csv: Path, tmp_path: Path
) -> None:
    ws = Workspace(root=tmp_path / "ws")
    state = run_pipeline(small_config(sample_csv, *SETTINGS), ws)
    assert state.is_completed(), state.message
    first = state.result()
    assert [r["path"] for r in github.received] == [f"/repos/{REPOSITORY}/dispatches"]
    request = github.received[0]
    assert request["headers"]["Authorization"] == "Bearer test-token"
    assert request["body"] == {
        "event_type": "champion-changed",
        "client_payload": {"model": "models:/adult-income/1"},
    }
    assert _announced(ws, first.mlflow["run_id"]).startswith("champion-changed (models:/adult")

    again = run_pipeline(small_config(sample_csv, *SETTINGS), ws)  # same model: v1 stays
    assert again.is_completed(), again.message
    assert champion(ws.root) == "1"
    assert len(github.received) == 1
    assert (
        ANNOUNCED_TAG not in client_for(ws.root).get_run(again.result().mlflow["run_id"]).data.tags
    )


def test_a_refused_dispatch_keeps_the_new_champion_and_says_how_to_release(
    github: GitHubStandIn, sample_csv: Path, tmp_path: Path
) -> None:
    github.answer = (401, {"message": "Bad credentials"})
    ws = Workspace(root=tmp_path / "ws")
    state = run_pipeline(small_config(sample_csv, *SETTINGS), ws)
    assert state.is_completed(), state.message
    assert champion(ws.root) == "1" and len(github.received) == 1
    note = _announced(ws, state.result().mlflow["run_id"])
    assert note.startswith("not sent: champion-changed refused by ")
    assert "401 Bad credentials" in note and "models:/adult-income/1" in note


def test_announcing_without_a_token_stops_before_any_work(
    sample_csv: Path, tmp_path: Path, capsys
) -> None:
    ws = tmp_path / "ws"
    with mock.patch.dict(os.environ, {"GITHUB_TOKEN": ""}):
        code, summary, err = run_cli(
            capsys, "--workspace", str(ws), "--set", f"data.source=csv:{sample_csv}",
            "--set", f"registry.announce_to={REPOSITORY}",
        )  # fmt: skip
    assert code == 1 and summary["error_type"] == "ConfigError"
    assert f"registry.announce_to is {REPOSITORY} but GITHUB_TOKEN is not set" in summary["error"]
    assert "Traceback" not in err and not (ws / "mlflow.db").exists()
