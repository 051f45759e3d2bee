"""Storage faults: a damaged MLflow store is named and never replaced by a new, empty one; a
workspace that cannot be written is one line before anything runs."""

from __future__ import annotations

import errno
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_RUN, tmpfs
from tests.faults.runs import Watched, query
from tests.faults.runs import run as run_trustflow
from tests.flows.helpers import champion, versions

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
    done = run_trustflow(ws, "--json", "--set", f"data.source=csv:{sample_csv}", *SAMPLE_RUN)
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
    with tmpfs(tmp_path / "ro", "8m") as mount:
        (mount / "ws").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        yield mount / "ws"


def test_a_read_only_workspace_is_one_line_before_anything_runs(
    read_only_dir: Path, sample_csv: Path
) -> None:
    done = run_trustflow(read_only_dir, "--set", f"data.source=csv:{sample_csv}")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines == [
        f"error: cannot write to the workspace {read_only_dir} (Read-only file system: "
        f"{read_only_dir / '.trustflow'}); nothing was run"
    ], done.stderr


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A workspace on its own 64 MiB file system, which a test can fill."""
    with tmpfs(tmp_path / "disk", "64m") as mount:
        (mount / "ws").mkdir()
        yield mount / "ws"


def fill(path: Path) -> None:
    """Write zeros to ``path`` until the file system has no byte left."""
    with path.open("wb", buffering=0) as handle:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    handle.write(bytes(size))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc


def test_a_full_disk_is_one_line_and_a_rerun_after_freeing_space_completes(
    small_disk: Path, sample_csv: Path
) -> None:
    ws = small_disk
    args = ("--json", "--set", f"data.source=csv:{sample_csv}", *SAMPLE_RUN)
    run = Watched(ws, *args)
    run.wait_for_stage("validate")  # the data is in; the disk fills before it is versioned
    filler = ws.parent / "filler"
    fill(filler)
    code, _, out = run.finish()

    assert code == 1, "\n".join(run.lines)
    last = run.lines[-1]
    assert re.fullmatch(
        rf"error: no space left on the device holding {re.escape(str(ws))}\S* \(during "
        r"[a-z-]+\); nothing was registered; free some space and run again",
        last,
    ), "\n".join(run.lines)
    noise = ("Traceback", "Error logging to API", "httpx", "Internal Server Error")
    assert not [line for line in run.lines if any(word in line for word in noise)], run.lines
    assert json.loads(out)["error_type"] == "StorageFull"
    assert not query(ws / "mlflow.db", "SELECT name, version FROM model_versions")

    filler.unlink()  # space freed: the same command completes, with one version
    again = run_trustflow(ws, *args)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["model"]["version"] == "1"
    assert versions(ws) == ["1"] and champion(ws) == "1"
