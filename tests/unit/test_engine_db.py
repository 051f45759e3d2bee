"""The local engine's database template (flows/engine_db.py): kept only while unused, and
copied only where no database is."""

import sqlite3
from pathlib import Path

import pytest

from flows import engine_db


def _database(path: Path, flow_runs: int) -> Path:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")  # as Prefect's server keeps it
        for table in ("block_type", *engine_db.RUN_TABLES):
            db.execute(f"CREATE TABLE {table} (id INTEGER)")
        db.execute("INSERT INTO block_type VALUES (1)")
        db.executemany("INSERT INTO flow_run VALUES (?)", [(i,) for i in range(flow_runs)])
    return path


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "trustflow"


def test_a_used_database_is_never_kept_as_the_template(tmp_path: Path, cache: Path) -> None:
    engine_db.keep_as_template(_database(tmp_path / "used.db", flow_runs=1))
    assert not engine_db.template_path().exists() and list(cache.iterdir()) == []
    engine_db.keep_as_template(_database(tmp_path / "new.db", flow_runs=0))
    with sqlite3.connect(engine_db.template_path()) as db:
        assert db.execute("SELECT id FROM block_type").fetchall() == [(1,)]


def test_the_template_seeds_only_a_database_that_does_not_exist(tmp_path: Path) -> None:
    assert not engine_db.seed(tmp_path / "a.db")  # no template yet
    engine_db.keep_as_template(_database(tmp_path / "new.db", flow_runs=0))
    assert engine_db.seed(tmp_path / "a.db")
    with sqlite3.connect(tmp_path / "a.db") as db:
        assert db.execute("SELECT id FROM block_type").fetchall() == [(1,)]
    existing = _database(tmp_path / "b.db", flow_runs=3)
    assert not engine_db.seed(existing)
    with sqlite3.connect(existing) as db:
        assert db.execute("SELECT count(*) FROM flow_run").fetchone() == (3,)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".db") == [
        "a.db",
        "b.db",
        "new.db",
    ]  # fmt: skip  (no copy left beside them)
