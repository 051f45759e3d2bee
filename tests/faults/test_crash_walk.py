"""`kill -9` at every stage boundary of train-tabular, one after another on one workspace: each
run is killed (its whole process group, no cleanup) the moment the next stage line appears, and
the run after it must get past that point. After the last kill a run completes. Nothing the
crashes left may show: one version, holding the alias; no MLflow run left RUNNING; DVC's
workspace, cache and remote agree; no process left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_RUN
from tests.e2e.processes import BIN
from tests.faults.runs import Watched, none_left_behind, query
from tests.faults.runs import run as run_trustflow
from tests.flows.helpers import champion, versions

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

# train-tabular's stages in order, as their lines appear; the run ends after `promote`.
STAGES = (
    "workspace", "tracking", "ingest", "validate", "version", "split", "preprocess", "train",
    "evaluate", "export", "audit", "explain", "track", "register", "card",
)  # fmt: skip


def _dvc_status(ws: Path, *options: str) -> dict:
    done = subprocess.run(
        [str(BIN / "dvc"), "status", "--json", *options],
        cwd=ws, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout or "{}")


def test_a_kill_at_every_stage_boundary_loses_nothing(tmp_path: Path, sample_csv: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    args = ("--json", "--set", f"data.source=csv:{sample_csv}", *SAMPLE_RUN)
    db = ws / "mlflow.db"
    for stage in STAGES:
        run = Watched(ws, *args)
        run.wait_for_stage(stage)
        os.killpg(run.process.pid, signal.SIGKILL)
        run.process.wait(timeout=60)
        assert none_left_behind(ws, run.process.pid) == [], f"after a kill at {stage}"
        if db.exists():  # (the helper's client would make the store otherwise)
            assert versions(ws) in ([], ["1"]), f"after a kill at {stage}"
        print(f"killed after {stage}")

    started = time.monotonic()
    final = run_trustflow(ws, *args)
    assert final.returncode == 0, final.stderr
    summary = json.loads(final.stdout)
    print(f"the run after the last kill completed in {time.monotonic() - started:.1f} s")
    assert summary["model"]["version"] == "1" and versions(ws) == ["1"] and champion(ws) == "1"
    # The last killed run had trained, evaluated and exported: the final run reuses that work.
    assert summary["cache"]["train"] and summary["cache"]["export"], summary["cache"]
    assert not query(db, "SELECT run_uuid FROM runs WHERE status = 'RUNNING'")
    killed = query(db, "SELECT run_uuid FROM runs WHERE status = 'KILLED'")
    assert killed, "the runs the kills left open are closed as KILLED"
    assert _dvc_status(ws) == {}  # the workspace's data matches its .dvc file and the cache
    assert _dvc_status(ws, "--cloud") == {}  # and the remote holds it
