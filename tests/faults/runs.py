"""Driving `trustflow run` as a user does, in its own process group, and watching its stores
from outside so that a fault can be injected at an exact point."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.processes import clean_env

TRUSTFLOW = Path(sys.executable).with_name("trustflow")


def start_run(workspace: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    """``trustflow run --workspace W ARGS`` as a subprocess leading its own process group, so a
    kill reaches everything it started (Prefect's temporary server too)."""
    return subprocess.Popen(
        [str(TRUSTFLOW), "run", "--workspace", str(workspace), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(**env),
        cwd=workspace,
        start_new_session=True,
    )


def run(workspace: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    process = start_run(workspace, *args, **env)
    out, err = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def query(db: Path, sql: str, *params: object) -> list[tuple]:
    """Read MLflow's SQLite store while another process writes it (read-only, retried while
    the writer holds its lock)."""
    if not db.exists():
        return []
    for _ in range(50):
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
                return connection.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            time.sleep(0.05)
    raise TimeoutError(f"{db} stayed locked")


def kill_when(
    process: subprocess.Popen[str], seen: Callable[[], bool], timeout: float = 600
) -> float:
    """SIGKILL the run's whole process group the moment ``seen()`` holds; the seconds it took.
    Fails if the run ends first."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if seen():
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate(timeout=60)
            return time.monotonic() - started
        if process.poll() is not None:
            _, err = process.communicate()
            raise AssertionError(f"the run ended (exit {process.returncode}) first:\n{err}")
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    raise TimeoutError(f"not seen within {timeout}s")


def left_behind(ws: Path, session: int) -> list[str]:
    """Processes still in a run's session, or serving its workspace's Prefect database (the
    run's temporary server has a session of its own)."""
    import psutil

    home = str(ws / ".trustflow" / "prefect")
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            if os.getsid(process.pid) == session or process.environ().get("PREFECT_HOME") == home:
                found.append(" ".join(process.info["cmdline"] or []))
        except (psutil.Error, OSError):
            continue
    return found


def none_left_behind(ws: Path, session: int, timeout: float = 30) -> list[str]:
    """``left_behind``, once what was told to stop has had ``timeout`` seconds to do so."""
    deadline = time.monotonic() + timeout
    while (found := left_behind(ws, session)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


class Watched:
    """A run whose stderr is read as it comes, so a signal can be sent at a stage."""

    def __init__(self, ws: Path, *args: str, **env: str) -> None:
        self.ws = ws
        self.process = start_run(ws, *args, **env)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for_stage(self, stage: str, timeout: float = 600) -> None:
        """Until the stage line of ``stage`` (printed when it ends) appears."""
        self.wait_for(lambda: self.saw_stage(stage), f"no {stage} line", timeout)

    def saw_stage(self, stage: str) -> bool:
        return any(line.split()[1:2] == [stage] for line in self.lines if line.strip())

    def wait_for(self, seen: Callable[[], bool], what: str, timeout: float = 600) -> None:
        """Until ``seen()`` holds; fails, with what the run printed, if the run ends first."""
        deadline = time.monotonic() + timeout
        while not seen():
            assert self.process.poll() is None, "\n".join(self.lines)
            assert time.monotonic() < deadline, f"{what}:\n" + "\n".join(self.lines)
            time.sleep(0.01)

    def finish(self, timeout: float = 120) -> tuple[int, float, str]:
        """(exit code, seconds from now to exit, stdout)."""
        started = time.monotonic()
        out = self.process.stdout.read() if self.process.stdout else ""
        code = self.process.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return code, time.monotonic() - started, out
