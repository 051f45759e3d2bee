"""Four `trustflow run` at once on one new workspace, then four more once it exists: none dies
(before the workspace lock, two fresh runs raced MLflow's SQLite schema migration), the later
ones say they wait, and the registry ends with one version holding the alias."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_RUN
from tests.faults.runs import start_run
from tests.flows.helpers import champion, versions

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

RUNS = 4


def _together(ws: Path, args: tuple[str, ...]) -> list[dict]:
    """RUNS runs started at once on ``ws``: each completes, and all but the first wait."""
    processes = [start_run(ws, *args) for _ in range(RUNS)]
    results = [(process, *process.communicate(timeout=1200)) for process in processes]
    for process, out, err in results:
        assert process.returncode == 0, err
        assert json.loads(out)["state"] == "COMPLETED"
    waited = [err for _, _, err in results if "waiting for another run in this workspace" in err]
    assert len(waited) >= RUNS - 1  # all but the first (a late one may find it free)
    assert all("(pid " in err for err in waited)
    assert (ws / ".trustflow" / "run.lock").read_text() == ""  # released
    return [json.loads(out) for _, out, _ in results]


def test_runs_started_together_on_one_workspace_queue_and_all_complete(
    tmp_path: Path, sample_csv: Path
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    args = ("--json", "--set", f"data.source=csv:{sample_csv}", *SAMPLE_RUN)
    # A new workspace: its stores are made by whichever run comes first.
    summaries = _together(ws, args)
    # The same data and config: one version, and it is the champion.
    assert [s["model"]["new_version"] for s in summaries].count(True) == 1
    assert versions(ws) == ["1"] and champion(ws) == "1"
    # The same workspace again, now that it exists: every run reuses v1.
    summaries = _together(ws, args)
    assert [s["model"]["new_version"] for s in summaries] == [False] * RUNS
    assert versions(ws) == ["1"] and champion(ws) == "1"
