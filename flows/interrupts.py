"""A CLI run that is interrupted ends within seconds and leaves nothing half-done.

- **Prefect's API lives apart.** The local engine would start its temporary server as a child
  in the run's process group, so a terminal's Ctrl-C (sent to the whole foreground group) killed
  it too, and the run then spent minutes retrying an API that was gone. :class:`RunServer` starts
  the same server in its own session and stops it when the run ends.
- **SIGINT and SIGTERM** raise KeyboardInterrupt in the main thread, which unwinds the flow (the
  alias moves last, so it has not moved). The CLI then calls :func:`abandon`: the Prefect flow
  run becomes Cancelled, this process's MLflow runs KILLED (with a note naming the stage) and its
  half-written models FAILED, child processes are stopped, and one line says what happened.
- **A watchdog** does the same from another thread if the main thread has not got there within
  a few seconds (it can be inside a long C call that signals do not interrupt).
- **A second signal** ends the process at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from trustflow.errors import TrustflowError

STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
# How long the main thread gets to unwind before the watchdog acts. It needs about a second
# (Prefect records the crash); it waits far longer when the flow's task runner, on its way out,
# waits for a candidate still training.
WATCHDOG_SECONDS = 3.0
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class ServerStartTimeout(TrustflowError):
    """Prefect's temporary server did not answer in time."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _die_with_parent() -> None:
    """In the server's process, before it runs uvicorn: SIGTERM it when the run's process dies,
    however it dies (kill -9 included). In a session of its own, nothing else would stop it.
    Linux only (prctl PR_SET_PDEATHSIG, kept across exec); elsewhere the CLI's exit hook and
    interrupt handling still stop it."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


class RunServer:
    """Prefect's temporary API server for one CLI run: the server the local engine starts
    itself (same app, same settings, no UI), but in its own session, logging to ``log``."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory",
                 "prefect.server.api.server:create_app", "--host", "127.0.0.1",
                 "--port", str(port), "--log-level", "error", "--lifespan", "on"],
                env={**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                     "PREFECT__SERVER_FINAL": "1"},
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                preexec_fn=_die_with_parent,
            )  # fmt: skip

    def start(self, meanwhile: Callable[[], object] | None = None) -> str:
        """Start it and wait for its /health; the API URL. ``meanwhile`` runs while the server
        boots (the flow's imports take as long as the server's, about 3.5 s each here). The wait
        is Prefect's own setting (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, 120 s by
        default here) and starts once ``meanwhile`` is done."""
        import httpx

        port = _free_port()
        self.process = self._spawn(port)
        if meanwhile is not None:
            try:
                meanwhile()
            except BaseException:
                self.stop()
                raise
        seconds = float(os.environ.get(STARTUP_TIMEOUT_ENV, "120"))
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code == 3:  # uvicorn: the port was taken meanwhile
                port = _free_port()
                self.process = self._spawn(port)
                continue
            if code is not None:
                raise TrustflowError(
                    f"Prefect's temporary server exited with code {code} before answering; "
                    f"see {self.log}"
                )
            try:
                api_url = f"http://127.0.0.1:{port}/api"
                if httpx.get(f"{api_url}/health", timeout=2).is_success:
                    return api_url
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise ServerStartTimeout(
            f"Prefect's temporary server did not answer within {seconds:g} s (the machine may "
            f"be busy); nothing was run. Raise {STARTUP_TIMEOUT_ENV}, or start a server once "
            "with `trustflow server up` and set PREFECT_API_URL"
        )

    def stop(self, wait: float = 10) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class StageTracker(logging.Handler):
    """Follows the stage lines (flows.progress.report): the stage running, the flow run, what
    the register stage registered and what the promote stage decided."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.stage = "start-up"
        self.flow_run_id: str | None = None
        self.registered: str | None = None
        self.promoted: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        status, stage = getattr(record, "status", ""), getattr(record, "stage", "")
        self.flow_run_id = getattr(record, "flow_run_id", None) or self.flow_run_id
        if status == "running":
            self.stage = stage
        elif stage == "register" and status in ("done", "cached"):
            self.registered = getattr(record, "detail", "") or None
        elif stage == "promote" and status == "done":
            self.promoted = getattr(record, "detail", "") or None

    def outcome(self) -> str:
        """What the run left in the registry, for its last line."""
        if self.registered is None:
            return "nothing was registered"
        decided = f"; {self.promoted}" if self.promoted else ""
        return f"{self.registered} was registered{decided}"


class Interrupts:
    """SIGINT/SIGTERM handling for one flow run (see the module's docstring). ``abandon`` is
    called once, by the main thread or by the watchdog; the process then exits with 130
    (SIGINT) or 143 (SIGTERM)."""

    def __init__(self, abandon: Callable[[int], None]) -> None:
        self.abandon_once = _once(abandon)
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}
        self.previous_unraisable = sys.unraisablehook

    def __enter__(self) -> Interrupts:
        global _active
        for signum in EXIT_CODES:
            self.previous[signum] = signal.signal(signum, self._handle)
        self.previous_unraisable = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        _active = self
        return self

    def __exit__(self, *exc: object) -> None:
        global _active
        _active = None
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = self.previous_unraisable

    def _unraisable(self, info: Any) -> None:
        """Our KeyboardInterrupt, raised where Python ignores exceptions (a finalizer, a weakref
        callback), would print "Exception ignored in" and a traceback, and be lost. It stays
        recorded: the next stage refuses to start (flows.progress.StageLog), and the watchdog
        ends the run if none comes."""
        if self.signum is not None and isinstance(info.exc_value, KeyboardInterrupt):
            return
        self.previous_unraisable(info)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # the second one: at once
            stop_children(grace=0)
            os._exit(EXIT_CODES.get(signal.Signals(signum), 128 + signum))
        self.signum = signum
        watchdog = threading.Thread(target=self._watchdog, name="interrupt-watchdog", daemon=True)
        watchdog.start()
        raise KeyboardInterrupt

    def _watchdog(self) -> None:
        time.sleep(WATCHDOG_SECONDS)
        assert self.signum is not None
        self.abandon_once(self.signum)

    def abandon(self) -> NoReturn:
        """From the main thread, once the flow has unwound."""
        self.abandon_once(self.signum if self.signum is not None else signal.SIGINT)
        raise AssertionError("unreachable: the process has exited")


_active: Interrupts | None = None


def interrupted() -> bool:
    """Whether this run got SIGINT or SIGTERM. What unwinds the flow is not always the
    KeyboardInterrupt itself: Prefect's task engine, interrupted while it starts a task run,
    raises "Task run is not set" in its place."""
    return _active is not None and _active.signum is not None


def claim_sigterm() -> None:
    """Called as each stage starts. Prefect's flow engine installs its own SIGTERM handler for
    the run (it turns SIGTERM into a crash, which a task starting at that moment reports as
    "Task run is not set"); under the CLI, the run's Interrupts handles SIGTERM instead. Prefect
    puts back the handler it found when the flow ends."""
    if _active is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _active._handle)


def _once(action: Callable[[int], None]) -> Callable[[int], None]:
    """``action``, then the exit, for whichever thread comes first; the other waits for it."""
    lock = threading.Lock()

    def run(signum: int) -> None:
        if lock.acquire(blocking=False):
            try:
                action(signum)
            finally:
                exit_now(EXIT_CODES.get(signal.Signals(signum), 128 + signum))
        threading.Event().wait()

    return run


def stop_children(grace: float = 3.0) -> None:
    """Terminate every process this one started (joblib workers, a Docker build, ...), then
    kill what is left after ``grace`` seconds."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate() if grace else child.kill()
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def exit_now(code: int) -> None:
    """End the process without waiting for worker threads (a candidate still training) or
    exit handlers that talk to servers already stopped."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
