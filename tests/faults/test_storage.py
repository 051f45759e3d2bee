"""Storage faults: a damaged MLflow store is named and never replaced by a new, empty one; a
workspace that cannot be written is one line before anything runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FAST_CANDIDATES
from tests.faults.runs import run

pytestmark = [pytest.mark.faults, pytest.mark.e2e]


def _store(tmp_path: Path, trained, damage: str) -> tuple[Path, bytes]:
    """A new workspace holding a copy of a real store, damaged: emptied or cut in half."""
    ws = tmp_path / "ws"
    ws.mkdir()
    db = ws / "mlflow.db"
    shutil.copyfile(trained.workspace / "mlflow.db", db)
    size = db.stat().st_size
    with db.open("r+b") as handle:
        handle.truncate(0 if damage == "empty" else size // 2)
    return ws, db.read_bytes()


@pytest.mark.parametrize(
    ("damage", "problem"),
    [("empty", "it is empty (0 bytes)"), ("truncated", "malformed")],
)
def test_a_damaged_mlflow_store_is_named_and_left_as_it_is(
    tmp_path: Path, sample_csv: Path, trained, damage: str, problem: str
) -> None:
    ws, before = _store(tmp_path, trained, damage)
    done = run(ws, "--json", "--set", f"data.source=csv:{sample_csv}", "--set", FAST_CANDIDATES)
    assert done.returncode == 1
    error = json.loads(done.stdout)["error"]
    assert error.startswith(f"MLflow store {ws / 'mlflow.db'} is damaged (")
    assert problem in error and "nothing was run" in error and "move it aside" in error
    assert "Traceback" not in done.stderr
    assert (ws / "mlflow.db").read_bytes() == before  # not repaired, not replaced
    assert not (ws / "data").exists()  # nothing ran


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a file system mounted read-only (as root, permission bits would not stop
    writes; a read-only mount does)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only tmpfs needs root; this test runs as root in CI")
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        (mount / "ws").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        yield mount / "ws"
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_read_only_workspace_is_one_line_before_anything_runs(
    read_only_dir: Path, sample_csv: Path
) -> None:
    done = run(read_only_dir, "--set", f"data.source=csv:{sample_csv}")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines == [
        f"error: cannot write to the workspace {read_only_dir} (Read-only file system: "
        f"{read_only_dir / '.trustflow'}); nothing was run"
    ], done.stderr
