"""Where a pipeline keeps its state. One directory holds the versioned data, the MLflow store,
stage artifacts, Prefect's cached results and (for the local engine) Prefect's own database,
so two workspaces never share state. A workspace may be copied or moved: it records where it
was, and the next run repoints what its stores recorded at the old place (see
tasks/workspace.py)."""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ConfigDict

from trustflow.errors import WorkspaceError


class Workspace(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    root: Path

    @classmethod
    def resolve(cls, directory: str | Path | None = None) -> Workspace:
        """``directory``, else ``$TRUSTFLOW_WORKSPACE``, else the current directory."""
        chosen = directory or os.environ.get("TRUSTFLOW_WORKSPACE") or Path.cwd()
        return cls(root=Path(chosen).expanduser().resolve())

    @property
    def data_dir(self) -> Path:
        return self.root / "data"  # DVC-tracked data sets

    @property
    def state_dir(self) -> Path:
        return self.root / ".trustflow"

    @property
    def staging_dir(self) -> Path:
        return self.state_dir / "staging"

    @property
    def artifacts_dir(self) -> Path:
        return self.state_dir / "artifacts"  # content-addressed stage outputs

    @property
    def results_dir(self) -> Path:
        return self.state_dir / "prefect-results"

    @property
    def default_remote(self) -> Path:
        return self.state_dir / "dvc-remote"

    @property
    def tensorboard_dir(self) -> Path:
        return self.root / "tensorboard"  # `tensorboard --logdir <workspace>/tensorboard`

    @property
    def prefect_home(self) -> Path:
        return self.state_dir / "prefect"  # the local engine's database and settings

    @property
    def root_record(self) -> Path:
        return self.state_dir / "workspace.json"

    def recorded_root(self) -> Path | None:
        """Where this workspace was when a run last used it (None before the first run)."""
        try:
            return Path(json.loads(self.root_record.read_text())["root"])
        except FileNotFoundError:
            return None

    def record_root(self) -> None:
        self.root_record.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.root_record.with_name(f".{self.root_record.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"root": str(self.root)}) + "\n")
        os.replace(tmp, self.root_record)  # whole or not at all

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    def tracking_uri(self) -> str:
        """``$MLFLOW_TRACKING_URI`` when set, else SQLite inside the workspace."""
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.mlflow_db}"

    def _unwritable(self, exc: OSError) -> WorkspaceError:
        return WorkspaceError(
            f"cannot write to the workspace {self.root} ({exc.strerror}: {exc.filename}); "
            "nothing was run"
        )

    def make_dir(self, path: Path) -> None:
        """``path`` (and its parents) inside the workspace; a workspace that cannot be written
        is one WorkspaceError naming it, before anything starts."""
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._unwritable(exc) from None

    @property
    def lock_file(self) -> Path:
        return self.state_dir / "run.lock"

    @contextmanager
    def exclusive(self, waiting: Callable[[str], None]) -> Iterator[None]:
        """Hold the workspace for one run. Runs on one workspace share its SQLite MLflow store,
        Prefect's local database and the DVC repository, none of which takes concurrent writers
        (MLflow's own guidance: SQLite for one writer, a server on PostgreSQL for many); so a
        second run waits, after ``waiting(who holds it)``, and starts when the first ends. The
        lock is the kernel's (flock): a run that dies, even by kill -9, releases it."""
        self.make_dir(self.lock_file.parent)
        try:
            handle = self.lock_file.open("a+")
        except OSError as exc:
            raise self._unwritable(exc) from None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                waiting(_holder(handle))
                fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}, since {time.strftime('%H:%M:%S')}\n")
            handle.flush()
            try:
                yield
            finally:
                handle.truncate(0)
                fcntl.flock(handle, fcntl.LOCK_UN)


def _holder(handle: IO[str]) -> str:
    """Who holds the lock: the line its holder writes once it has it. A run that took the lock
    an instant ago may not have written it yet, so wait for it a little (seen with four runs
    started at once: the waiters printed "another process")."""
    deadline = time.monotonic() + 5
    while True:
        handle.seek(0)
        line = handle.read().strip()
        if line or time.monotonic() > deadline:
            return line or "another process"
        time.sleep(0.05)
