"""Start-up under load: Prefect's temporary server that does not answer in time is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_RUN
from tests.faults.runs import run

pytestmark = [pytest.mark.faults, pytest.mark.e2e]


def test_a_temporary_server_that_does_not_answer_in_time_is_one_line(
    tmp_path: Path, sample_csv: Path
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    # A zero budget stands for a machine too busy to start the server in time.
    done = run(ws, "--json", "--set", f"data.source=csv:{sample_csv}", *SAMPLE_RUN,
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="0")  # fmt: skip
    assert done.returncode == 1
    summary = json.loads(done.stdout)
    assert summary["state"] == "FAILED"
    assert summary["error"].startswith("Prefect's temporary server did not answer within 0 s")
    assert "Traceback" not in done.stderr and "stdout:" not in done.stderr
    assert not (ws / "data").exists()  # nothing ran
