"""The inference server: an ASGI app over onnxruntime.

Endpoints: ``POST /invocations`` (MLflow's scoring protocol: JSON, CSV or Parquet),
``POST /v1/predict`` (records in, labels and probabilities out), ``GET /healthz`` (the process is
up; ``/ping`` and ``/health`` are MLflow's names for it), ``GET /readyz`` (a model is loaded),
``GET /version``, ``GET /metrics`` (Prometheus), and OpenAPI docs at ``/docs``. With
``encrypted``: ``GET /v1/encrypted/model``, ``POST /v1/encrypted/context`` and
``POST /v1/encrypted/predict`` (see docs/encrypted.md and trustflow.crypto).

With a token (``$TRUSTFLOW_SERVE_TOKEN``), every path but the probes in ``OPEN_PATHS`` needs
``Authorization: Bearer <token>``.

A watcher thread loads the model, then asks the :class:`ModelSource` every ``poll_seconds``
whether a newer release exists (an alias that moved, a file that changed). A new release is
loaded next to the old one and swapped in with one assignment: requests already running keep
the scorer they started with, so a reload fails none of them.
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar, Protocol

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from trustflow import __version__
from trustflow.serving.protocol import MLFLOW_KEYS, request_columns
from trustflow.serving.scorer import (
    Device,
    ModelLoadError,
    ModelRejected,
    ModelRelease,
    PayloadError,
    Scorer,
)

log = logging.getLogger("trustflow.serve")

TOKEN_ENV = "TRUSTFLOW_SERVE_TOKEN"
# What a load balancer or Kubernetes probes without credentials; everything else (MLflow's /ping
# and /health included) needs the token when one is set.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
DROPPED_HEADER = b"x-trustflow-dropped-columns"
ERROR_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    404: "RESOURCE_DOES_NOT_EXIST",
    413: "REQUEST_LIMIT_EXCEEDED",
    415: "BAD_REQUEST",
    500: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE",
}
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServeSettings(BaseModel):
    """What ``trustflow serve`` is told on its command line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1)
    max_rows: int = Field(default=10_000, ge=1)
    poll_seconds: float = Field(default=10.0, gt=0)
    device: Device = "auto"
    threads: int = Field(default=1, ge=1)  # onnxruntime intra-op threads per worker
    # Refuse what MLflow's server ignores or converts: unknown columns and top-level keys,
    # params, records with different keys, numbers sent as strings.
    strict: bool = False
    # Encrypted inference on a linear-headed model (trustflow.crypto): its own body limit (a
    # request is one ~230 KB ciphertext per feature) and a bounded store of client contexts.
    encrypted: bool = False
    max_encrypted_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    max_contexts: int = Field(default=32, ge=1)
    max_context_bytes: int = Field(default=256 * 1024 * 1024, ge=1)


def load_scorer(release: ModelRelease, settings: ServeSettings) -> Scorer:
    """A scorer for ``release``; with ``encrypted``, also its linear split, or a
    ModelLoadError saying why it has none."""
    scorer = Scorer(release, settings.device, settings.threads)
    if settings.encrypted:
        from importlib.util import find_spec

        from trustflow.crypto.linear import NotLinearHeaded, split_linear

        if find_spec("tenseal") is None:
            raise ModelLoadError(
                "--encrypted needs TenSEAL, which is not installed: pip install 'tenseal==0.3.18' "
                "(the project's `encrypted` extra; `make install` includes it)"
            )

        try:
            scorer.linear = split_linear(release.graph, release.source)
        except NotLinearHeaded as exc:
            raise ModelLoadError(f"--encrypted: {exc}") from exc
    return scorer


class ModelSource(Protocol):
    """Where releases come from: a registry alias, a fixed version, a file."""

    description: str

    def load(self) -> ModelRelease:
        """The release to serve now; raises ModelLoadError (or ModelRejected)."""
        ...

    def poll(self, current: ModelRelease) -> ModelRelease | None:
        """A release newer than ``current``, or None when it is still the one to serve."""
        ...


class FileSource:
    """An ``.onnx`` file; a changed file (by content) is a new release."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = str(path)
        self._seen: tuple[int, int] | None = None

    def load(self) -> ModelRelease:
        try:
            stat = self.path.stat()
            graph = self.path.read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"{self.path}: cannot read the model ({exc.strerror})") from exc
        self._seen = (stat.st_mtime_ns, stat.st_size)
        return ModelRelease(
            name=self.path.stem,
            version=hashlib.sha256(graph).hexdigest()[:12],
            source=str(self.path),
            graph=graph,
        )

    def poll(self, current: ModelRelease) -> ModelRelease | None:
        stat = self.path.stat()
        if (stat.st_mtime_ns, stat.st_size) == self._seen:
            return None
        release = self.load()
        return None if release.version == current.version else release


class ServerMetrics:
    """Prometheus metrics in a registry of this server's own (so several apps in one process,
    as in tests, do not collide). With several workers, prometheus_client's multiprocess mode
    ($PROMETHEUS_MULTIPROC_DIR) adds up all workers' values at scrape time."""

    def __init__(self, multiprocess: bool) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        self.exposition = registry
        if multiprocess:
            self.exposition = CollectorRegistry()
            MultiProcessCollector(self.exposition)  # type: ignore[no-untyped-call]
        self.requests = Counter(
            "trustflow_requests",
            "HTTP requests answered, by endpoint and status",
            ["endpoint", "status"],
            registry=registry,
        )
        self.errors = Counter(
            "trustflow_request_errors",
            "Requests answered with a 4xx or 5xx status",
            ["endpoint", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "trustflow_request_duration_seconds",
            "Time from request to response, by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.rows = Counter(
            "trustflow_predicted_rows", "Rows scored", ["endpoint"], registry=registry
        )
        self.reloads = Counter(
            "trustflow_model_reloads",
            "Model loads by outcome (loaded, rejected, error)",
            ["outcome"],
            registry=registry,
        )
        self.model = Gauge(
            "trustflow_model_info",
            "The model being served (value 1)",
            ["name", "version"],
            registry=registry,
            multiprocess_mode="liveall",
        )


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _error_body(status: int, message: str) -> dict[str, str]:
    """MLflow's error shape."""
    return {"error_code": ERROR_CODES.get(status, "BAD_REQUEST"), "message": message}


class InferenceServer:
    def __init__(
        self, source: ModelSource, settings: ServeSettings, initial: Scorer | None = None
    ) -> None:
        self.source = source
        self.settings = settings
        self.initial = initial
        self.scorer: Scorer | None = None
        self.not_ready_reason = "loading the model"
        self.rejected: set[str] = set()
        self.stop = threading.Event()
        self.token = os.environ.get(TOKEN_ENV) or None
        self.metrics = ServerMetrics(bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")))
        self.contexts: Any = None
        if settings.encrypted:
            from trustflow.crypto.ckks import ContextStore

            self.contexts = ContextStore(settings.max_contexts, settings.max_context_bytes)

    # -- model lifecycle -------------------------------------------------------------------

    def load(self, release: ModelRelease) -> Scorer:
        return load_scorer(release, self.settings)

    def install(self, scorer: Scorer) -> None:
        release = scorer.release
        previous, self.scorer = self.scorer, scorer  # the swap: one reference assignment
        if previous is not None:
            self.metrics.model.remove(previous.release.name, previous.release.version)
        self.metrics.model.labels(release.name, release.version).set(1)
        self.metrics.reloads.labels("loaded").inc()
        log.info(
            "serving %s version %s (%s) on %s",
            release.name,
            release.version,
            release.source,
            ", ".join(scorer.providers),
        )

    def _refuse(self, exc: ModelLoadError) -> None:
        if str(exc) in self.rejected:  # counted and said once, not on every poll
            return
        self.rejected.add(str(exc))
        outcome = "rejected" if isinstance(exc, ModelRejected) else "error"
        self.metrics.reloads.labels(outcome).inc()
        log.warning("%s; keeping the current model", exc)

    def watch(self) -> None:
        """Load, then poll for new releases until stopped. Never raises: a registry that is
        down or a bad release leaves the current model serving."""
        while self.scorer is None and not self.stop.is_set():
            try:
                self.install(self.load(self.source.load()))
            except ModelLoadError as exc:
                self.not_ready_reason = str(exc)
                self._refuse(exc)
                self.stop.wait(self.settings.poll_seconds)
            except Exception as exc:  # e.g. the registry is unreachable
                self.not_ready_reason = f"{type(exc).__name__}: {exc}"
                log.warning("cannot load %s: %s", self.source.description, exc)
                self.stop.wait(self.settings.poll_seconds)
        while not self.stop.wait(self.settings.poll_seconds):
            current = self.scorer
            assert current is not None
            try:
                release = self.source.poll(current.release)
                if release is not None:
                    self.install(self.load(release))
            except ModelLoadError as exc:
                self._refuse(exc)
            except Exception as exc:
                self.metrics.reloads.labels("error").inc()
                log.warning("polling %s failed: %s", self.source.description, exc)

    # -- request handling ------------------------------------------------------------------

    def authorized(self, scope: Scope) -> bool:
        """Whether this request may proceed: an open path, no token set, or the right one.
        Compared as bytes: a header is any bytes, and a non-ASCII one is simply wrong."""
        if self.token is None or scope.get("path") in OPEN_PATHS:
            return True
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(
            token.strip(), self.token.encode()
        )

    async def _body(
        self, headers: dict[bytes, bytes], receive: Receive, encrypted: bool = False
    ) -> bytes:
        """The request body, refused (413) past the endpoint's limit, which the message names
        with the option that raises it."""
        if encrypted:
            limit, option = self.settings.max_encrypted_bytes, "--max-encrypted-bytes"
        else:
            limit, option = self.settings.max_body_bytes, "--max-body-bytes"
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            raise PayloadError(
                413,
                f"the body has {int(declared)} bytes; the limit is {limit} "
                f"(raise it with {option})",
            )
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise PayloadError(400, "the client disconnected before sending the body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadError(413, f"the body exceeds {limit} bytes (raise it with {option})")
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    def _ready_scorer(self) -> Scorer:
        scorer = self.scorer  # a snapshot: a reload during this request does not affect it
        if scorer is None:
            raise PayloadError(503, f"no model loaded yet: {self.not_ready_reason}")
        return scorer

    def _check_rows(self, rows: int) -> None:
        if rows == 0:
            raise PayloadError(400, "the request has no rows")
        if rows > self.settings.max_rows:
            raise PayloadError(
                413,
                f"{rows} rows exceed the limit of {self.settings.max_rows} "
                "(raise it with --max-rows)",
            )

    async def score(
        self, scope: Scope, receive: Receive, endpoint: str
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """One scoring request, straight from ASGI: (status, JSON body, extra headers)."""
        started = time.perf_counter()
        status, extra = 200, []
        try:
            headers = dict(scope["headers"])
            body = await self._body(headers, receive)
            scorer = self._ready_scorer()
            content_type = headers.get(b"content-type", b"").decode("latin-1") or None
            strict = self.settings.strict
            columns, rows = request_columns(endpoint, content_type, body, scorer.numeric, strict)
            self._check_rows(rows)
            prediction = scorer.predict(columns, rows, strict)
            if endpoint == "invocations":
                answer: Any = {"predictions": prediction.labels.tolist()}
            elif scorer.regression:
                release = scorer.release
                answer = {
                    "model": {"name": release.name, "version": release.version},
                    "values": prediction.labels.tolist(),
                }
            else:
                release = scorer.release
                answer = {
                    "model": {"name": release.name, "version": release.version},
                    "classes": scorer.classes,
                    "labels": scorer.class_names(prediction.labels),
                    "probabilities": prediction.probabilities.tolist(),
                }
            if prediction.dropped:
                extra.append((DROPPED_HEADER, ",".join(prediction.dropped).encode()))
            self.metrics.rows.labels(endpoint).inc(rows)
        except PayloadError as exc:
            status, answer = exc.status, _error_body(exc.status, exc.message)
        except Exception as exc:  # the server stays up; the client learns what failed
            log.exception("scoring failed")
            status = 500
            answer = _error_body(500, f"scoring failed: {type(exc).__name__}: {exc}")
        self.observe(endpoint, status, started)
        return status, orjson.dumps(answer), extra

    # -- encrypted inference ---------------------------------------------------------------

    def _linear_scorer(self) -> Scorer:
        if self.contexts is None:
            raise PayloadError(404, "encrypted serving is off: start the server with --encrypted")
        return self._ready_scorer()

    def encrypted_model(self) -> tuple[int, dict[str, Any]]:
        """What a client needs: the front graph, the feature count, the parameters."""
        import base64

        from trustflow.crypto.ckks import DEFAULT_PARAMS, block_width

        try:
            scorer = self._linear_scorer()
        except PayloadError as exc:
            return exc.status, _error_body(exc.status, exc.message)
        linear, release = scorer.linear, scorer.release
        return 200, {
            "model": {"name": release.name, "version": release.version},
            "columns": scorer.columns,
            "classes": linear.classes,
            "features": linear.features,
            "front": base64.b64encode(linear.front).decode(),
            "front_output": linear.front_output,
            "parameters": DEFAULT_PARAMS.describe(),
            # The packed layout: a row's features padded to ``block_width`` slots.
            "block_width": block_width(linear.features),
        }

    async def encrypted(self, scope: Scope, receive: Receive, endpoint: str) -> Response:
        """POST /v1/encrypted/context (a public context in, its id out) or
        /v1/encrypted/predict (framed ciphertexts in, the logits' ciphertext out)."""
        import anyio

        from trustflow.crypto import ckks

        started, status = time.perf_counter(), 200
        try:
            scorer = self._linear_scorer()
            headers = dict(scope["headers"])
            body = await self._body(headers, receive, encrypted=True)
            if endpoint == "encrypted-context":
                key = self.contexts.key(body)
                if key not in self.contexts:
                    context = await anyio.to_thread.run_sync(
                        ckks.load_public_context, body, ckks.DEFAULT_PARAMS
                    )
                    self.contexts.put(key, context)
                answer = _json({"context_id": key, "bytes": len(body)})
            else:
                version = headers.get(b"x-trustflow-model-version", b"").decode("latin-1")
                if version != scorer.release.version:
                    raise PayloadError(
                        409,
                        f"the request was made for version '{version[:40]}'; this server "
                        f"serves {scorer.release.version}: GET /v1/encrypted/model again "
                        "(header X-Trustflow-Model-Version)",
                    )
                context_id = headers.get(b"x-trustflow-context", b"").decode("latin-1")
                context = self.contexts.get(context_id)
                linear = scorer.linear
                blobs = ckks.unframe(body)
                layout = headers.get(b"x-trustflow-layout", ckks.PACKED.encode()).decode("latin-1")
                logits, rows = await anyio.to_thread.run_sync(
                    ckks.evaluate, context, blobs, linear.weights, linear.bias, layout
                )
                self.metrics.rows.labels(endpoint).inc(rows)
                answer = Response(
                    logits,
                    media_type="application/octet-stream",
                    headers={"x-trustflow-rows": str(rows)},
                )
        except PayloadError as exc:
            status = exc.status
            answer = _json(_error_body(exc.status, exc.message), exc.status)
        except Exception as exc:
            log.exception("encrypted scoring failed")
            status = 500
            answer = _json(_error_body(500, f"{type(exc).__name__}: {exc}"), 500)
        self.observe(endpoint, status, started)
        return answer

    def observe(self, endpoint: str, status: int, started: float) -> None:
        self.metrics.requests.labels(endpoint, status).inc()
        if status >= 400:
            self.metrics.errors.labels(endpoint, status).inc()
        self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)

    def ready(self) -> Response:
        scorer = self.scorer
        if scorer is None:
            return _json({"ready": False, "reason": self.not_ready_reason}, 503)
        release = scorer.release
        return _json(
            {
                "ready": True,
                "model": {"name": release.name, "version": release.version},
                "source": release.source,
                "providers": scorer.providers,
            }
        )

    def metrics_text(self) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(self.metrics.exposition), media_type=CONTENT_TYPE_LATEST)


def _records_schema() -> dict[str, Any]:
    record = {"type": "object", "additionalProperties": {"type": ["number", "string", "null"]}}
    return {"type": "array", "items": record}


def _request_body(json_schema: dict[str, Any], tables: bool = False) -> dict[str, Any]:
    """An OpenAPI requestBody: JSON with ``json_schema``, and CSV and Parquet where accepted."""
    content: dict[str, Any] = {"application/json": {"schema": json_schema}}
    if tables:
        content["text/csv"] = {"schema": {"type": "string"}}
        content["application/vnd.apache.parquet"] = {
            "schema": {"type": "string", "format": "binary"}
        }
    return {"requestBody": {"required": True, "content": content}}


INVOCATIONS_BODY = _request_body(
    {
        "type": "object",
        "description": f"exactly one of {', '.join(MLFLOW_KEYS)}",
        "properties": {
            "dataframe_split": {
                "type": "object",
                "properties": {
                    "columns": {"type": "array", "items": {"type": "string"}},
                    "data": {"type": "array", "items": {"type": "array"}},
                },
            },
            "dataframe_records": _records_schema(),
            "instances": {},
            "inputs": {},
        },
    },
    tables=True,
)
PREDICT_BODY = _request_body(
    {"type": "object", "required": ["records"], "properties": {"records": _records_schema()}}
)


OCTETS_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def create_app(
    source: ModelSource, settings: ServeSettings, initial: Scorer | None = None
) -> ScoringRoutes:
    """The ASGI app; ``initial`` is a model already loaded (the CLI loads it up front to report
    problems before binding the port)."""
    server = InferenceServer(source, settings, initial)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # What exists at start-up lives as long as the server: keep the collector off it, and
        # collect less often (each request makes a few hundred short-lived objects), which cuts
        # the latency tail that full collections add.
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        if server.initial is not None:
            # Before the worker accepts connections: with several workers, none of them
            # answers 503 while another is already serving.
            server.install(server.initial)
            server.initial = None
        watcher = threading.Thread(target=server.watch, name="model-watcher", daemon=True)
        watcher.start()
        yield
        server.stop.set()
        watcher.join(timeout=5)

    app = FastAPI(
        title="trustflow inference server",
        description=f"ONNX Runtime serving {source.description}",
        lifespan=lifespan,
    )

    # Declared for the OpenAPI docs; requests to them are answered by ScoringRoutes first.
    @app.post("/invocations", openapi_extra=INVOCATIONS_BODY)
    async def invocations(request: Request) -> Response:
        """MLflow's scoring protocol: answers {"predictions": [class index, ...]}."""
        status, body, _ = await server.score(request.scope, request.receive, "invocations")
        return Response(body, status, media_type="application/json")

    @app.post("/v1/predict", openapi_extra=PREDICT_BODY)
    async def predict(request: Request) -> Response:
        """Records in; class labels and per-class probabilities out."""
        status, body, _ = await server.score(request.scope, request.receive, "predict")
        return Response(body, status, media_type="application/json")

    @app.get("/v1/encrypted/model")
    async def encrypted_model() -> Response:
        """With --encrypted: the preprocessing graph the client runs, the feature count and the
        CKKS parameters a context must have."""
        status, body = server.encrypted_model()
        return _json(body, status)

    @app.post("/v1/encrypted/context", openapi_extra=OCTETS_BODY)
    async def encrypted_context(request: Request) -> Response:
        """With --encrypted: a client's public TenSEAL context (no secret key); its id."""
        return await server.encrypted(request.scope, request.receive, "encrypted-context")

    @app.post("/v1/encrypted/predict", openapi_extra=OCTETS_BODY)
    async def encrypted_predict(request: Request) -> Response:
        """With --encrypted: framed ciphertexts in the layout of header X-Trustflow-Layout
        (packed, the default, or feature-major; headers X-Trustflow-Context and
        X-Trustflow-Model-Version too); the framed answer, whose decryption gives the logits."""
        return await server.encrypted(request.scope, request.receive, "encrypted-predict")

    @app.get("/healthz")
    @app.get("/ping", include_in_schema=False)  # MLflow's clients wait on /ping
    @app.get("/health", include_in_schema=False)
    async def healthz() -> Response:
        """The process is up (it may still be loading its model: see /readyz)."""
        return _json({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        """200 with the model being served, 503 until one is loaded."""
        return server.ready()

    @app.get("/version")
    async def version() -> Response:
        """The server's version as plain text (MLflow's client reads it with get_version())."""
        return Response(f"trustflow {__version__}", media_type="text/plain")

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format: requests, errors, latency histogram, reloads."""
        return server.metrics_text()

    return ScoringRoutes(app, server)


class ScoringRoutes:
    """ASGI: the token check for every path, then the two scoring routes straight to the server
    and the rest to FastAPI. FastAPI's routing and dependency machinery cost ~130 us a request,
    half of a one-row prediction."""

    ROUTES: ClassVar[dict[str, str]] = {"/invocations": "invocations", "/v1/predict": "predict"}

    def __init__(self, app: FastAPI, server: InferenceServer) -> None:
        self.app: ASGIApp = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = self.ROUTES.get(scope.get("path", ""))
        if not self.server.authorized(scope):
            started = time.perf_counter()
            message = f"missing or wrong bearer token (set by ${TOKEN_ENV})"
            body = orjson.dumps(_error_body(401, message))
            await _send(send, 401, body, [(b"www-authenticate", b'Bearer realm="trustflow"')])
            if endpoint is not None:
                self.server.observe(endpoint, 401, started)
            return
        if endpoint is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        status, body, headers = await self.server.score(scope, receive, endpoint)
        await _send(send, status, body, headers)


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
