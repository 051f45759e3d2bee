"""`dvc repro` reproduces the flow's data: same core functions, same config, same md5."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.data import ingest_dataset, validate_dataset
from trustflow.config import load_config
from trustflow.io import file_digest
from trustflow.workspace import Workspace

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def test_dvc_repro_matches_the_flow(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    for item in ("dvc.yaml", "configs"):
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, project / item)
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    # As with an activated virtualenv: the stages' `python` is this environment's.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=project, check=True)
    done = subprocess.run([*dvc, "repro"], cwd=project, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr

    # The flow's validate task on the same config, in its own workspace.
    config = load_config(REPO / "configs" / "tabular.yaml").data
    ws = Workspace(root=tmp_path / "flow-ws")
    staged, origin = ingest_dataset.fn(config, ws)
    flow_data = validate_dataset.fn(staged, origin, config, ws).data

    assert file_digest(project / "pipeline" / "adult.parquet") == flow_data.md5
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert lock["stages"]["prepare"]["outs"][0]["md5"] == flow_data.md5
    splits = sorted(p.name for p in (project / "pipeline" / "splits").iterdir())
    assert splits == ["test.parquet", "train.parquet", "valid.parquet"]

    again = subprocess.run([*dvc, "repro"], cwd=project, capture_output=True, text=True, env=env)
    assert "didn't change, skipping" in again.stdout  # up to date: nothing recomputed
