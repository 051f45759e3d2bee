"""Data tasks called through ``.fn`` on a real DVC repository in a temp directory."""

from pathlib import Path

import pandas as pd
import pytest
import yaml

from tasks.data import ingest_dataset, validate_dataset, version_dataset
from tests.conftest import small_config, write_csv
from trustflow.config import SplitConfig
from trustflow.errors import DataValidationError
from trustflow.io import file_digest
from trustflow.workspace import Workspace


def _prepare(source: Path, ws: Workspace):
    cfg = small_config(source).data
    staged, origin = ingest_dataset.fn(cfg, ws)
    return cfg, validate_dataset.fn(staged, origin, cfg, SplitConfig(), ws)


def test_version_tracks_the_data_with_dvc_and_pushes_it(sample_csv: Path, tmp_path: Path) -> None:
    ws = Workspace(root=tmp_path / "ws")
    _, validated = _prepare(sample_csv, ws)
    lineage = version_dataset.fn(validated.data, validated.origin, None, ws)

    assert (ws.root / ".dvc").is_dir()
    dvc_file = ws.root / lineage.dvc_file
    recorded = yaml.safe_load(dvc_file.read_text())["outs"][0]
    assert recorded["md5"] == lineage.data.md5 == file_digest(ws.data_dir / "adult.parquet")
    pushed = ws.default_remote / "files" / "md5" / lineage.data.md5[:2] / lineage.data.md5[2:]
    assert pushed.is_file() and file_digest(pushed) == lineage.data.md5
    assert lineage.git_revision is None  # a temp dir is not a git repository

    again = version_dataset.fn(validated.data, validated.origin, None, ws)  # idempotent
    assert again == lineage


def test_version_uses_a_configured_remote(sample_csv: Path, tmp_path: Path) -> None:
    ws = Workspace(root=tmp_path / "ws")
    _, validated = _prepare(sample_csv, ws)
    remote = tmp_path / "elsewhere"
    lineage = version_dataset.fn(validated.data, validated.origin, str(remote), ws)
    assert lineage.remote == str(remote)
    assert (remote / "files" / "md5" / lineage.data.md5[:2] / lineage.data.md5[2:]).is_file()


def test_refused_data_leaves_no_file_behind(adult_sample: pd.DataFrame, tmp_path: Path) -> None:
    ws = Workspace(root=tmp_path / "ws")
    bad = write_csv(adult_sample.assign(sex="Alien"), tmp_path / "bad.csv")
    with pytest.raises(DataValidationError, match=r"bad\.csv: column 'sex'"):
        _prepare(bad, ws)
    assert not (ws.data_dir / "adult.parquet").exists()
    assert list(ws.staging_dir.iterdir()) == []


def test_a_dvc_init_cut_short_is_made_again(sample_csv: Path, tmp_path: Path) -> None:
    """What a full disk left during `dvc init`: .dvc/ with an empty config (no `no_scm`), which
    DVC then refuses as 'not a git repository'."""
    ws = Workspace(root=tmp_path / "ws")
    _, validated = _prepare(sample_csv, ws)
    (ws.root / ".dvc").mkdir()
    (ws.root / ".dvc" / "config").write_text("")
    lineage = version_dataset.fn(validated.data, validated.origin, None, ws)
    assert "no_scm = True" in (ws.root / ".dvc" / "config").read_text()
    assert (ws.root / lineage.dvc_file).is_file()
