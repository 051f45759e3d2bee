"""A workspace's new SQLite MLflow store is made whole or not at all."""

import sqlite3
from pathlib import Path

import pytest

from tasks.tracking.runs import check_tracking_server
from tests.conftest import tmpfs
from trustflow.workspace import Workspace


def test_a_new_store_is_created_complete(tmp_path: Path) -> None:
    ws = Workspace(root=tmp_path / "ws")
    ws.make_dir(ws.root)
    assert check_tracking_server.fn(ws) == f"new local store sqlite:///{ws.mlflow_db}"
    with sqlite3.connect(ws.mlflow_db) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert {"alembic_version", "runs", "registered_models", "logged_models"} <= tables
    assert [p.name for p in ws.root.iterdir()] == ["mlflow.db"]  # no staging file left
    assert check_tracking_server.fn(ws) == f"local store sqlite:///{ws.mlflow_db}"


def test_a_store_that_cannot_be_finished_is_not_left_half_made(tmp_path: Path) -> None:
    """On a disk too small for MLflow's schema the run stops, and the next run does not find a
    half-migrated store (it used to fail on 'table logged_models already exists'). The store is
    built there by MLflow's migrations, or copied there from the user's cache: either fills it."""
    with tmpfs(tmp_path / "disk", "256k") as mount:
        ws = Workspace(root=mount)
        with pytest.raises(Exception, match=r"database or disk is full|No space left on device"):
            check_tracking_server.fn(ws)
        assert list(mount.iterdir()) == []


def test_a_new_store_copied_from_the_cache_names_its_own_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second store is a copy of the empty one kept in the user's cache; the Default
    experiment's artifact location in each is its own workspace's, never the first one's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    locations = []
    for name in ("first", "second"):
        ws = Workspace(root=tmp_path / name)
        ws.make_dir(ws.root)
        assert check_tracking_server.fn(ws).startswith("new local store")
        with sqlite3.connect(ws.mlflow_db) as db:
            locations += db.execute("SELECT artifact_location FROM experiments").fetchall()
    assert list((tmp_path / "cache" / "trustflow").glob("mlflow-*.db"))
    assert locations == [
        ((tmp_path / name / "mlartifacts" / "0").as_uri(),) for name in ("first", "second")
    ]
