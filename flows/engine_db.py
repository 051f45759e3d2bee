"""The local engine's database, made once per Prefect version and copied into each new workspace.

A run's temporary server builds its SQLite database on first use: about a hundred schema
migrations and the block types, 6–7 s of a new workspace's first run here (14.7 s to a healthy
server on a new database, 8.6 s on a copy). So the first server start on a machine keeps a
backup of the database it made, as it was before any flow ran, in the user's cache
(``~/.cache/trustflow``), keyed by the Prefect version; a new workspace's database starts as a
copy of it. Anything unexpected (a cache that cannot be written, a full disk) only means the
server builds the database itself, as before."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from trustflow.io import atomic_path, copy_new, user_cache

SQLITE_URL = "sqlite+aiosqlite:///"


def template_path() -> Path:
    return user_cache() / f"prefect-{version('prefect')}.db"


def local_database() -> Path | None:
    """The SQLite file the temporary server will use, or None when it uses another database."""
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

    url = str(PREFECT_API_DATABASE_CONNECTION_URL.value())
    return Path(url.removeprefix(SQLITE_URL)) if url.startswith(SQLITE_URL) else None


def seed(database: Path) -> bool:
    """Start ``database`` as a copy of the template; whether it did (not when there is no
    template yet, or the copy fails: the server then builds the database itself)."""
    template = template_path()
    if not template.is_file():
        return False
    try:
        return copy_new(template, database)
    except OSError:  # no room, say: the server makes its own, and says what is wrong
        return False


# What a run writes; a copy holding any of it is no template (another run, started at the same
# time on the same new workspace, may already have used the database).
RUN_TABLES = ("flow_run", "task_run", "log")


def keep_as_template(database: Path) -> None:
    """Back up a database the server has just made, before any flow ran, as the template (a
    consistent copy of the file and its write-ahead log, renamed into place whole)."""
    template = template_path()
    if template.exists():
        return
    with (
        contextlib.suppress(OSError, sqlite3.Error, _Used),
        atomic_path(template) as staging,
        contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as source,
        contextlib.closing(sqlite3.connect(staging)) as copy,
    ):
        source.backup(copy)
        if any(copy.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() for t in RUN_TABLES):
            raise _Used


class _Used(Exception):
    """The database had already been used: it is not kept."""


def prepared(start: Callable[[], str]) -> str:
    """``start()`` (the server's start, returning once it answers) with the database seeded
    from the template before it, or kept as the template after it when it was new."""
    database = local_database()
    if database is None or database.exists() or seed(database):
        return start()
    api_url = start()
    keep_as_template(database)
    return api_url
