"""``trustflow serve``: the inference server (src/trustflow/serving) on uvicorn.

The model is checked before the port is bound (a missing alias, a model that failed parity or a
port in use is one line and a non-zero exit). With ``--workers N`` uvicorn starts N processes;
each builds its own app from $TRUSTFLOW_SERVE_SPEC and loads the model itself, and Prometheus'
multiprocess mode sums their metrics.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from trustflow.serving.app import (
    FileSource,
    ModelSource,
    ScoringRoutes,
    ServeSettings,
    create_app,
    load_scorer,
)
from trustflow.serving.run import (
    announce,
    check_port,
    log_to_stderr,
    run_one_process,
    uvicorn_options,
)
from trustflow.serving.scorer import ModelLoadError, ModelRelease
from trustflow.workspace import Workspace

SPEC_ENV = "TRUSTFLOW_SERVE_SPEC"


def model_source(model: str, ws: Workspace, encrypted: bool = False) -> ModelSource:
    """``models:/...`` from the workspace's registry (or $MLFLOW_TRACKING_URI), else a file."""
    if model.startswith("models:/"):
        # MLflow, but not Prefect: imported only when a models:/ URI needs the registry.
        from tasks.tracking.source import RegistrySource
        from tasks.tracking.store import configure

        configure(ws)
        return RegistrySource(model, encrypted)
    path = Path(model).expanduser().resolve()
    if path.suffix != ".onnx":
        raise ModelLoadError(
            f"--model {model}: expected models:/NAME@ALIAS, models:/NAME/VERSION or an .onnx file"
        )
    return FileSource(path)


class DeferredSource:
    """Builds the real source on first use. A worker starts serving the release its parent
    already fetched; the registry client (MLflow, seconds to import) is only built by the
    watcher thread, when it first polls for a newer release."""

    def __init__(self, model: str, ws: Workspace, encrypted: bool) -> None:
        self.model, self.ws, self.encrypted = model, ws, encrypted
        self.description = model
        self._source: ModelSource | None = None

    def _real(self) -> ModelSource:
        if self._source is None:
            self._source = model_source(self.model, self.ws, self.encrypted)
        return self._source

    def load(self) -> ModelRelease:
        return self._real().load()

    def poll(self, current: ModelRelease) -> ModelRelease | None:
        return self._real().poll(current)


def app_from_env() -> ScoringRoutes:
    """The uvicorn factory each worker process calls when --workers > 1."""
    spec = json.loads(os.environ[SPEC_ENV])
    log_to_stderr()
    settings = ServeSettings(**spec["settings"])
    release = ModelRelease(**spec["release"], graph=Path(spec["graph"]).read_bytes())
    source = DeferredSource(spec["model"], Workspace(root=spec["workspace"]), settings.encrypted)
    return create_app(source, settings, initial=load_scorer(release, settings))


def serve(model: str, settings: ServeSettings, ws: Workspace, access_log: bool = False) -> None:
    import uvicorn

    source = model_source(model, ws, settings.encrypted)
    release = source.load()
    scorer = load_scorer(release, settings)  # fails here, not per worker
    check_port(settings.host, settings.port)
    announce(scorer, settings)
    if settings.workers == 1:
        run_one_process(source, settings, scorer, access_log)
        return
    with tempfile.TemporaryDirectory(prefix="trustflow-serve-") as shared:
        graph = Path(shared) / "initial.onnx"
        graph.write_bytes(release.graph)
        metrics_dir = Path(shared) / "metrics"
        metrics_dir.mkdir()
        spec = {
            "model": model,
            "workspace": str(ws.root),
            "settings": settings.model_dump(),
            "release": {"name": release.name, "version": release.version, "source": release.source},
            "graph": str(graph),
        }
        os.environ[SPEC_ENV] = json.dumps(spec)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        uvicorn.run(
            "flows.serve:app_from_env",
            factory=True,
            workers=settings.workers,
            **uvicorn_options(settings, access_log),
        )
