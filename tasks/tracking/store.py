"""Which MLflow store a workspace uses, whether it answers, and its experiments."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import time
from pathlib import Path

import httpx
import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.uri import append_to_uri_path

from trustflow.errors import TrackingUnavailable
from trustflow.io import atomic_path, user_cache
from trustflow.workspace import Workspace


def _quiet_loggers() -> None:
    for name in ("alembic", "mlflow"):  # schema migrations and "Created version" chatter
        logging.getLogger(name).setLevel(logging.WARNING)


def configure(ws: Workspace) -> str:
    """Point MLflow at the workspace store (or $MLFLOW_TRACKING_URI) and quiet its loggers."""
    _quiet_loggers()
    uri = ws.tracking_uri()
    user_choice = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # set_tracking_uri also exports MLFLOW_TRACKING_URI; undo that so the environment keeps
    # meaning "the user's override" and a later workspace in this process gets its own store.
    if user_choice is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    return uri


def relocate_store(ws: Workspace, previous: Path) -> int:
    """Repoint the workspace's own SQLite store after a copy or move from ``previous``: every
    recorded path under the old root (experiments' and runs' artifact locations, logged models,
    version sources, tags such as the model card's URI) now names the same file under the new
    root. MLflow has no API for this; it keeps absolute URIs in these columns. Returns how many
    values changed. A store elsewhere ($MLFLOW_TRACKING_URI) is left alone."""
    if ws.tracking_uri() != f"sqlite:///{ws.mlflow_db}" or not ws.mlflow_db.exists():
        return 0
    pairs = {(f"{previous}/", f"{ws.root}/")}
    pairs.add((previous.as_uri() + "/", ws.root.as_uri() + "/"))  # percent-encoded in URIs
    changed = 0
    with contextlib.closing(sqlite3.connect(ws.mlflow_db, timeout=60)) as db:
        db.execute("BEGIN IMMEDIATE")  # one writer: a concurrent run waits, then finds nothing
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for column in db.execute(f'PRAGMA table_info("{table}")').fetchall():
                name, kind = column[1], str(column[2]).upper()
                if not any(t in kind for t in ("CHAR", "TEXT", "CLOB")):
                    continue
                for old, new in pairs:
                    changed += db.execute(
                        f'UPDATE "{table}" SET "{name}" = REPLACE("{name}", ?, ?) '
                        f'WHERE instr("{name}", ?) > 0',
                        (old, new, old),
                    ).rowcount
        db.commit()
    return changed


TRACKING_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)  # seconds between the five attempts


def health_problem(uri: str) -> str | None:
    """None when the tracking server answers its /health, else what went wrong."""
    try:
        response = httpx.get(f"{uri.rstrip('/')}/health", timeout=5)
    except httpx.HTTPError as exc:
        return str(exc) or type(exc).__name__
    return None if response.status_code == 200 else f"HTTP {response.status_code}"


def sqlite_store_problem(uri: str) -> str | None:
    """Why a SQLite MLflow store cannot be used as it is (empty, not SQLite, damaged), or None.
    A store that does not exist yet is fine: MLflow makes it. One that exists but is damaged
    must never be replaced by a new, empty one."""
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri.removeprefix("sqlite:///"))
    if not path.exists():
        return None
    with path.open("rb") as handle:
        header = handle.read(16)
    if not header:
        return "it is empty (0 bytes)"
    if header != b"SQLite format 3\x00":
        return "it is not a SQLite database"
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
        ) as database:
            found = [row[0] for row in database.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None if found == ["ok"] else "; ".join(found[:3])


def create_sqlite_store(ws: Workspace, path: Path) -> None:
    """Make a new SQLite store whole or not at all. MLflow builds its schema in dozens of
    migrations on first use; a full disk or a kill in the middle would leave a half-migrated
    store that every later run fails on. So the store is made in a file beside ``path`` and
    renamed into place only when complete. It starts as a copy of an empty store kept in the
    user's cache (the migrations take about 2 s, once per MLflow version); the one place it
    names, the Default experiment's artifact location, is set to this workspace's."""
    staging = path.with_name(f".{path.name}.creating")  # the workspace lock: one writer
    staging.unlink(missing_ok=True)
    root = ws.mlflow_artifacts.as_uri()
    try:
        template = _store_template()
        if template is None:
            _build_store(staging, root)
        else:
            shutil.copyfile(template, staging)
            with contextlib.closing(sqlite3.connect(staging)) as db, db:
                now = int(time.time() * 1000)
                db.execute(
                    "UPDATE experiments SET artifact_location = ?, creation_time = ?, "
                    "last_update_time = ? WHERE experiment_id = 0",
                    (append_to_uri_path(root, "0"), now, now),  # type: ignore[no-untyped-call]
                )
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def _build_store(path: Path, artifact_root: str) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    _quiet_loggers()
    store = SqlAlchemyStore(f"sqlite:///{path}", artifact_root)  # type: ignore[no-untyped-call]
    store.engine.dispose()


def _store_template() -> Path | None:
    """The empty store of this MLflow version in the user's cache, made if missing; None when
    it cannot be made there."""
    template = user_cache() / f"mlflow-{mlflow.__version__}.db"
    if not template.is_file():
        with contextlib.suppress(OSError, sqlite3.Error), atomic_path(template) as staging:
            staging.unlink()  # (SQLite makes the file)
            _build_store(staging, (template.parent / "no-artifacts").as_uri())
    return template if template.is_file() else None


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def lost_tracking_server(ws: Workspace, stage: str) -> TrackingUnavailable | None:
    """After a failure in the tracking stages: if the tracking server has stopped answering,
    the error that says so (MLflow has already retried each call with backoff)."""
    uri = ws.tracking_uri()
    problem = health_problem(uri) if is_server(uri) else None
    if problem is None:
        return None
    retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "?")
    return TrackingUnavailable(
        f"MLflow tracking server {uri} stopped answering during the {stage} stage ({problem}; "
        f"each call was retried {retries} times with backoff); no alias was moved"
    )


def experiment_id_for(name: str, ws: Workspace) -> str:
    client = MlflowClient()
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    # With a local store, artifacts live in the workspace too (MLflow's default is ./mlruns
    # relative to wherever the process started). A tracking server decides for itself.
    remote = mlflow.get_tracking_uri().startswith(("http://", "https://", "databricks"))
    location = None if remote else (ws.mlflow_artifacts / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created concurrently by another run
        return client.get_experiment_by_name(name).experiment_id  # type: ignore[union-attr]
