"""`dvc repro` reproduces the flow's data: same core functions, same config, same md5; and
`dvc push` / `dvc pull` round-trip it through the configured remote."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.data import ingest_dataset, split_dataset, validate_dataset
from tasks.train import preprocess
from trustflow.config import load_config
from trustflow.io import file_digest
from trustflow.workspace import Workspace

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
SPLITS = ("train", "valid", "test")


def _outputs(project: Path) -> dict[str, str]:
    """md5 of every file `dvc repro` writes, by path relative to the project."""
    pipeline = project / "pipeline"
    return {
        str(path.relative_to(project)): file_digest(path)
        for path in sorted(pipeline.rglob("*"))
        if path.is_file() and path.name != ".gitignore"
    }


def test_dvc_repro_matches_the_flow_and_round_trips_the_remote(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    for item in ("dvc.yaml", "configs"):
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, project / item)
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    # As with an activated virtualenv: the stages' `python` is this environment's.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def dvc(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "dvc", *args]
        done = subprocess.run(command, cwd=project, capture_output=True, text=True, env=env)
        assert done.returncode == 0, f"dvc {' '.join(args)}:\n{done.stdout}{done.stderr}"
        return done

    # A git checkout with the project's own DVC config (its remote is the flow's remote).
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    dvc("init", "-q")
    shutil.copy(REPO / ".dvc" / "config", project / ".dvc" / "config")
    dvc("repro")

    # The flow's tasks on the same config, in their own workspace.
    cfg = load_config(REPO / "configs" / "tabular.yaml")
    ws = Workspace(root=tmp_path / "flow-ws")
    staged, origin = ingest_dataset.fn(cfg.data, ws)
    staged_md5 = staged.md5  # validate removes the staging file
    data = validate_dataset.fn(staged, origin, cfg.data, cfg.split, ws).data
    splits = split_dataset.fn(data, cfg.split, cfg.data.dataset.target.column, ws)
    preprocessor = preprocess.fn(splits.train, cfg.data.dataset, ws)

    repro = _outputs(project)
    assert repro == {
        "pipeline/staged/adult.parquet": staged_md5,
        "pipeline/adult.parquet": data.md5,
        **{f"pipeline/splits/{name}.parquet": getattr(splits, name).md5 for name in SPLITS},
        "pipeline/preprocessor.joblib": file_digest(preprocessor.path),
    }
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert lock["stages"]["validate"]["outs"][0]["md5"] == data.md5
    assert "didn't change, skipping" in dvc("repro").stdout  # up to date: nothing recomputed

    # Push to the configured remote, lose the outputs and the cache, pull them back.
    dvc("push")
    remote = project / ".trustflow" / "dvc-remote"
    assert any(path.is_file() for path in remote.rglob("*")), "dvc push wrote nothing"
    shutil.rmtree(project / "pipeline")
    shutil.rmtree(project / ".dvc" / "cache")
    dvc("pull")
    assert _outputs(project) == repro
    assert "up to date" in dvc("status").stdout.lower()
