"""Starting the inference server on uvicorn: shared by ``trustflow serve`` and the container's
``python -m trustflow.serving``."""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

from trustflow.serving.app import ModelSource, ServeSettings, create_app
from trustflow.serving.scorer import ModelLoadError, Scorer

log = logging.getLogger("trustflow.serve")


def log_to_stderr() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def check_port(host: str, port: int) -> None:
    """A port in use is one line before anything starts, not a uvicorn traceback."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ModelLoadError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def uvicorn_options(settings: ServeSettings, access_log: bool) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": "warning",
        "access_log": access_log,
        "loop": "uvloop",
        "http": "httptools",
        "timeout_graceful_shutdown": 10,
    }


def announce(scorer: Scorer, settings: ServeSettings) -> None:
    release = scorer.release
    log_to_stderr()
    log.info(
        "%s v%s on http://%s:%d (%d worker%s, %s); docs at /docs",
        release.name,
        release.version,
        settings.host,
        settings.port,
        settings.workers,
        "" if settings.workers == 1 else "s",
        ", ".join(scorer.providers),
    )


def run_one_process(
    source: ModelSource, settings: ServeSettings, scorer: Scorer, access_log: bool = False
) -> None:
    import uvicorn

    app = create_app(source, settings, initial=scorer)
    uvicorn.run(app, **uvicorn_options(settings, access_log))
