"""The one module that talks to MLflow: runs, metrics, artifacts, models, the registry.

A pipeline run is one MLflow run with a nested run per candidate. Models are logged once per
content hash: a re-run with unchanged inputs links to the model logged before instead of
logging a duplicate, and registers no new version.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import onnx
import onnxruntime
import pandas as pd
import psutil
import sklearn
from mlflow.entities import Dataset, DatasetInput, InputTag, LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.models import Model, infer_signature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema, TensorSpec
from mlflow.utils.file_utils import local_file_uri_to_path
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from tasks.data import Lineage, ValidatedData
from tasks.export import ExportedCandidate
from tasks.privacy import PrivacySummary
from tasks.responsible import AuditedCandidate, ExplainedModel
from tasks.train import EvaluatedCandidate
from trustflow.config import (
    CategoricalColumn,
    DatasetSchema,
    RegistryConfig,
    TabularConfig,
    TrackingConfig,
)
from trustflow.data.fingerprint import rows_digest, seen_rows, unseen
from trustflow.errors import IncompleteModel, PromotionConflict, TrackingUnavailable
from trustflow.evaluate import evaluate_model
from trustflow.io import load_artifact, read_frame, tree_digest
from trustflow.models.neural import NeuralClassifier, WarmStart
from trustflow.models.preprocess import features_and_target
from trustflow.privacy.mechanisms import PrivateRelease
from trustflow.promotion import Comparison, decide
from trustflow.refs import ArtifactRef, DataRef
from trustflow.serving.scorer import ModelLoadError, ModelRejected, ModelRelease
from trustflow.workspace import Workspace

SHA_TAG = "trustflow.model_sha256"
PARITY_PASSED_TAG = "trustflow.onnx.parity_passed"
ONNX_SHA_TAG = "trustflow.onnx_sha256"
FAIRNESS_PASSED_TAG = "trustflow.fairness.passed"
GIT_REVISION_TAG = "trustflow.git_revision"  # of the workspace when the version was trained
CANDIDATE_KIND_TAG = "trustflow.candidate.kind"
MODEL_CARD_TAG = "trustflow.model_card"
FILES_SHA_TAG = "trustflow.files_sha256"  # on a logged model: its files, hashed once uploaded
# Written into a model's folder by the registry when a version is created, after the model is
# complete: not part of what a model's file hash covers.
REGISTRY_FILES = ("registered_model_meta",)
OWNER_TAG = "trustflow.owner"  # on a run: the process that opened it (see run_owner)
REAPED_BY_TAG = "trustflow.reaped_by"  # on what a crash left behind: the run that closed it
# Declared rather than inferred: inference imports the model in a subprocess (seconds per model).
MODEL_REQUIREMENTS = [
    f"scikit-learn=={sklearn.__version__}",
    f"pandas=={pd.__version__}",
    f"numpy=={np.__version__}",
    f"onnx=={onnx.__version__}",
    f"onnxruntime=={onnxruntime.__version__}",
]


def skops_trusted_types(model: Any) -> list[str]:
    """MLflow saves scikit-learn models with skops (no pickle), which loads only the types it is
    told to trust. We trained every model in this run, so its types are trusted by construction:
    list them from the model itself. Anything else stays refused."""
    import skops.io

    return list(skops.io.get_untrusted_types(data=skops.io.dumps(model)))


class TrackedRun(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    experiment_id: str
    candidate_runs: dict[str, str]
    model_uris: dict[str, str]
    reaped: tuple[str, ...] = ()  # runs a crashed process left RUNNING, marked KILLED by this one


class Promotion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    new_version: bool  # False when an identical model was registered before
    promoted: bool  # the alias points at ``version`` after this run
    alias: str
    previous_champion: str | None
    challenger_score: float
    champion_score: float | None
    # What the two were compared on: test rows the champion never trained on (how many, and the
    # md5 of their fingerprints), or their recorded held-out scores; None without a comparison.
    comparison_rows: int | None = None
    comparison_md5: str | None = None
    comparison: str | None = None
    reason: str


def configure(ws: Workspace) -> str:
    """Point MLflow at the workspace store (or $MLFLOW_TRACKING_URI) and quiet its loggers."""
    for name in ("alembic", "mlflow"):  # schema migrations and "Created version" chatter
        logging.getLogger(name).setLevel(logging.WARNING)
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


def _health_problem(uri: str) -> str | None:
    """None when the tracking server answers its /health, else what went wrong."""
    try:
        response = httpx.get(f"{uri.rstrip('/')}/health", timeout=5)
    except httpx.HTTPError as exc:
        return str(exc) or type(exc).__name__
    return None if response.status_code == 200 else f"HTTP {response.status_code}"


def _is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


@task(name="tracking-check", cache_policy=NO_CACHE, persist_result=False)
def check_tracking_server(ws: Workspace) -> str:
    """Before any work: a tracking server must answer its /health, retried with backoff, or the
    run stops here with one line (a local SQLite store needs no check)."""
    uri = ws.tracking_uri()
    if not _is_server(uri):
        return f"local store {uri}"
    for delay in (*TRACKING_RETRY_DELAYS, None):
        problem = _health_problem(uri)
        if problem is None:
            return f"{uri} answers"
        if delay is not None:
            time.sleep(delay)
    raise TrackingUnavailable(
        f"MLflow tracking server {uri} did not answer after {len(TRACKING_RETRY_DELAYS) + 1} "
        f"attempts over "
        f"{sum(TRACKING_RETRY_DELAYS):g} s ({problem}); nothing was run"
    )


def lost_tracking_server(ws: Workspace, stage: str) -> TrackingUnavailable | None:
    """After a failure in the tracking stages: if the tracking server has stopped answering,
    the error that says so (MLflow has already retried each call with backoff)."""
    uri = ws.tracking_uri()
    problem = _health_problem(uri) if _is_server(uri) else None
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


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class TrackingTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tracking_uri: str
    experiment_id: str


def open_tracking(cfg: TrackingConfig, ws: Workspace) -> TrackingTarget:
    """Configure MLflow and make sure the experiment exists (a new SQLite store runs its schema
    migrations here, about two seconds)."""
    uri = configure(ws)
    return TrackingTarget(tracking_uri=uri, experiment_id=experiment_id_for(cfg.experiment, ws))


def start_pipeline_run(target: TrackingTarget, run_name: str, tags: dict[str, str]) -> TrackedRun:
    """Open the pipeline's run, then close what crashed runs left open in its experiment."""
    client = MlflowClient()
    run = client.create_run(
        target.experiment_id, run_name=run_name, tags={**tags, OWNER_TAG: run_owner()}
    )
    return TrackedRun(
        run_id=run.info.run_id,
        experiment_id=target.experiment_id,
        candidate_runs={},
        model_uris={},
        reaped=tuple(reap_abandoned(target.experiment_id, run.info.run_id)),
    )


def end_pipeline_run(run_id: str, ok: bool) -> None:
    MlflowClient().set_terminated(run_id, "FINISHED" if ok else "FAILED")


def _dataset_input(data: DataRef, schema: DatasetSchema) -> DatasetInput:
    """The training data as an MLflow dataset input. Its schema is our contract, so MLflow does
    not have to infer one by scanning every row (seconds on Adult)."""
    columns: list[ColSpec | TensorSpec] = [
        ColSpec("string" if isinstance(spec, CategoricalColumn) else "double", name)
        for name, spec in schema.columns.items()
    ]
    dataset = Dataset(
        name=schema.name,
        digest=data.md5[:8],
        source_type="local",
        source=json.dumps({"uri": str(data.path)}),
        schema=json.dumps({"mlflow_colspec": Schema(columns).to_dict()}),
        profile=json.dumps({"num_rows": data.rows, "num_elements": data.rows * len(columns)}),
    )
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])


def content_tags(model_sha256: str, export: ExportedCandidate) -> dict[str, str]:
    """What a logged model or a registered version holds: the native model and its ONNX form.
    Equal tags mean equal content, so it is reused instead of logged or registered again."""
    return {SHA_TAG: model_sha256, ONNX_SHA_TAG: export.onnx.sha256 if export.onnx else "none"}


def _content_filter(tags: dict[str, str]) -> str:
    return " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())


def run_owner() -> str:
    """``host:pid:start time`` of this process, tagged on every run it opens, so a later run can
    tell a run whose process died (kill -9, power loss) from one that is still going."""
    me = psutil.Process()
    return f"{socket.gethostname()}:{me.pid}:{me.create_time():.3f}"


def _owner_alive(owner: str) -> bool | None:
    """Whether the process named by an OWNER_TAG still runs; None when it ran on another host."""
    host, pid, started = owner.rsplit(":", 2)
    if host != socket.gethostname():
        return None
    try:
        return f"{psutil.Process(int(pid)).create_time():.3f}" == started
    except (psutil.NoSuchProcess, ValueError):
        return False


def reap_abandoned(experiment_id: str, by_run: str) -> list[str]:
    """What a crashed run left behind: its runs still RUNNING become KILLED, with a note, and its
    logged models still PENDING become FAILED, so nothing half-written is reused. Runs of live
    processes and of other hosts are left alone. Returns the runs marked KILLED."""
    client = MlflowClient()
    reaped: list[str] = []
    for run in client.search_runs(
        [experiment_id], "attributes.status = 'RUNNING'", max_results=1000
    ):
        owner = run.data.tags.get(OWNER_TAG)
        if owner is None or _owner_alive(owner) is not False:
            continue
        note = (
            f"Left RUNNING by a process that ended without closing it ({owner}); "
            f"marked KILLED by run {by_run}."
        )
        client.set_tag(run.info.run_id, "mlflow.note.content", note)
        client.set_tag(run.info.run_id, REAPED_BY_TAG, by_run)
        client.set_terminated(run.info.run_id, "KILLED")
        reaped.append(run.info.run_id)
    pending = [
        model
        for model in mlflow.search_logged_models(
            experiment_ids=[experiment_id], output_format="list"
        )
        if model.status == LoggedModelStatus.PENDING
    ]
    for model in pending:
        source = model.source_run_id
        if source is None or client.get_run(source).info.status != "RUNNING":
            client.set_logged_model_tags(model.model_id, {REAPED_BY_TAG: by_run})
            client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
    return reaped


@contextlib.contextmanager
def _local_files(artifact_location: str) -> Iterator[Path]:
    """The files of a logged model as a local directory: in place for a local store, else a
    temporary download."""
    if artifact_location.startswith("file:"):
        yield Path(local_file_uri_to_path(artifact_location))  # type: ignore[no-untyped-call]
        return
    with tempfile.TemporaryDirectory(prefix="trustflow-verify-") as tmp:
        yield Path(mlflow.artifacts.download_artifacts(artifact_location, dst_path=tmp))


def logged_model_problem(model_id: str) -> str | None:
    """None when the logged model is whole: READY, with files that hash to what was recorded
    once they were uploaded; else what is wrong with it. MLflow writes a model's tags before its
    files, so tags alone never prove a model is there."""
    model = MlflowClient().get_logged_model(model_id)
    if model.status != LoggedModelStatus.READY:
        return f"its status is {model.status}"
    recorded = model.tags.get(FILES_SHA_TAG)
    if recorded is None:
        return "no hash of its files was recorded"
    with _local_files(model.artifact_location) as root:
        actual = tree_digest(root, REGISTRY_FILES) if root.is_dir() else "no files"
    if actual != recorded:
        return f"its files hash to {actual[:12]}, not the recorded {recorded[:12]}"
    return None


def find_logged_model(experiment_id: str, tags: dict[str, str]) -> str | None:
    """A whole logged model with these content tags, if there is one."""
    found = mlflow.search_logged_models(
        experiment_ids=[experiment_id],
        filter_string=_content_filter(tags),
        output_format="list",
    )
    for model in found:
        if model.status == LoggedModelStatus.READY and logged_model_problem(model.model_id) is None:
            return str(model.model_uri)
    return None


def log_model_once(
    experiment_id: str,
    content: dict[str, str],
    name: str,
    model: Any,
    onnx_path: Path | None,
    example: pd.DataFrame,
    requirements: list[str],
) -> str:
    """Into the active run: the model with its ONNX form, or the whole logged model that has the
    same content already (tagged ``trustflow.model_reused``). Once the files are uploaded, their
    hash is recorded on the logged model; only a model with that record is ever reused or
    registered."""
    uri = find_logged_model(experiment_id, content)
    if uri is not None:
        mlflow.set_tag("trustflow.model_reused", uri)
        return uri
    info = Model.log(
        artifact_path=None,
        name=name,
        flavor=SklearnWithOnnx(onnx_path),
        sk_model=model,
        signature=infer_signature(example, model.predict(example)),
        input_example=example,
        pip_requirements=requirements,
        tags=content,
        skops_trusted_types=skops_trusted_types(model),
    )
    client = MlflowClient()
    logged = client.get_logged_model(info.model_id)
    with _local_files(logged.artifact_location) as root:
        digest = tree_digest(root, REGISTRY_FILES)
    client.set_logged_model_tags(info.model_id, {FILES_SHA_TAG: digest})
    return str(info.model_uri)


class SklearnWithOnnx:
    """A flavor module for ``Model.log``: the scikit-learn flavor and, when given, the ONNX form
    of the same pipeline in one MLflow model, so ``models:/NAME@ALIAS`` loads either way
    (``mlflow.sklearn.load_model`` or ``mlflow.onnx.load_model``) and both share the signature."""

    __name__ = "sklearn"

    def __init__(self, onnx_path: Path | None) -> None:
        self.onnx_path = onnx_path

    def save_model(self, path: str, mlflow_model: Model, **kwargs: Any) -> None:
        mlflow.sklearn.save_model(path=path, mlflow_model=mlflow_model, **kwargs)
        if self.onnx_path is None:
            return
        shutil.copyfile(self.onnx_path, Path(path) / "model.onnx")
        mlflow_model.add_flavor(
            "onnx",
            onnx_version=onnx.__version__,
            data="model.onnx",
            providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
        )
        mlflow_model.save(str(Path(path) / "MLmodel"))


@task(name="track", cache_policy=NO_CACHE, persist_result=False)
def track_pipeline(
    run: TrackedRun,
    config: TabularConfig,
    validated: ValidatedData,
    lineage: Lineage,
    evaluated: list[EvaluatedCandidate],
    exported: dict[str, ExportedCandidate],
    audits: dict[str, AuditedCandidate],
    explanations: dict[str, ExplainedModel],
    best_explanation: ExplainedModel,
    privacy: PrivacySummary,
    release: PrivateRelease | None,
    test: DataRef,
) -> TrackedRun:
    """Log the whole run: config, lineage, data checks, the gate table and the best candidate's
    explanation, and per candidate its params, metrics, figures, fairness audit, glass-box
    explanation and model (with signature and input example)."""
    schema = config.data.dataset
    data = lineage.data
    features, _ = features_and_target(read_frame(test), schema)
    example = features.head(5)
    with mlflow.start_run(run_id=run.run_id):
        params = _flatten(config.model_dump(mode="json", exclude={"data": {"dataset"}}))
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_dict(config.model_dump(mode="json"), "config.yaml")
        mlflow.log_dict(lineage.model_dump(mode="json"), "lineage.json")
        mlflow.set_tags(
            {
                "trustflow.data.md5": data.md5,
                "trustflow.data.path": str(data.path),
                "trustflow.data.dvc_file": lineage.dvc_file,
                "trustflow.data.remote": lineage.remote,
                "trustflow.data.git_revision": lineage.git_revision or "none",
                "trustflow.data.origin": lineage.origin,
            }
        )
        report = validated.report
        mlflow.log_metrics(
            {
                "data.rows_in": report.rows_in,
                "data.rows": report.rows_out,
                "data.rows_dropped": report.rows_dropped,
                "data.rows_with_missing": report.rows_with_missing,
            }
        )
        MlflowClient().log_inputs(run.run_id, datasets=[_dataset_input(data, schema)])
        mlflow.log_dict(
            {
                name: {
                    "onnx": exported[name].reason(),
                    "fairness": audited.audit.reason(),
                    "passed": exported[name].passed and audited.audit.passed,
                    "disparities": {
                        feature: result.disparities()
                        for feature, result in audited.audit.features.items()
                    },
                    "warnings": audited.audit.warnings,
                }
                for name, audited in audits.items()
            },
            "gates.json",
        )
        _log_explanation(best_explanation, "explanation")
        _log_privacy(privacy, release, config.privacy.utility_report)
        candidate_runs: dict[str, str] = {}
        model_uris: dict[str, str] = {}
        for item in evaluated:
            candidate = item.candidate
            with mlflow.start_run(
                experiment_id=run.experiment_id,
                run_name=candidate.name,
                nested=True,
                tags={OWNER_TAG: run_owner()},
            ) as child:
                mlflow.log_params({"kind": candidate.config.kind, **candidate.config.params})
                mlflow.log_metrics(
                    {**item.evaluation.metrics.model_dump(), "fit_seconds": candidate.fit_seconds}
                )
                if candidate.config.model_kind.network:
                    log_training(
                        load_artifact(candidate.model).steps[-1][1],
                        candidate.epoch_seconds,
                        child.info.run_id,
                    )
                mlflow.log_artifact(str(item.roc_png.path), "plots")
                mlflow.log_artifact(str(item.confusion_png.path), "plots")
                _log_audit(audits[candidate.name])
                if candidate.name in explanations:
                    _log_explanation(explanations[candidate.name], "explanation")
                export = exported[candidate.name]
                mlflow.set_tag("trustflow.onnx.parity", export.reason())
                if export.report is not None:
                    parity = export.report.parity
                    mlflow.log_metrics(
                        {
                            "onnx.max_abs_diff": parity.max_abs_diff,
                            "onnx.label_agreement": parity.label_agreement,
                            "onnx.latency_us_single_row": export.report.latency_us_single_row,
                            "onnx.size_bytes": export.report.size_bytes,
                        }
                    )
                content = content_tags(candidate.model.sha256, export)
                mlflow.set_tags({**content, "trustflow.data.md5": data.md5})
                uri = log_model_once(
                    run.experiment_id,
                    content,
                    candidate.name,
                    load_artifact(candidate.model),
                    export.onnx.path if export.onnx else None,
                    example,
                    MODEL_REQUIREMENTS,
                )
                candidate_runs[candidate.name] = child.info.run_id
                model_uris[candidate.name] = uri
    return run.model_copy(update={"candidate_runs": candidate_runs, "model_uris": model_uris})


def log_training(network: NeuralClassifier, epoch_seconds: Sequence[float], run_id: str) -> None:
    """A network's epochs as MLflow metric histories (step = epoch), with each epoch's time as
    measured when it trained, and where it started from."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    keys = ("train_loss", "val_loss", "val_accuracy")
    metrics = [
        Metric(f"epoch.{key}", float(epoch[key]), now, int(epoch["epoch"]))
        for epoch in network.history_
        for key in keys
    ]
    metrics += [
        Metric("epoch.epoch_seconds", seconds, now, step)
        for step, seconds in enumerate(epoch_seconds, start=1)
    ]
    MlflowClient().log_batch(run_id, metrics=metrics)
    mlflow.log_metrics(
        {"epochs_run": len(network.history_), "best_epoch": network.best_epoch_,
         "best_val_loss": network.best_val_loss_}
    )  # fmt: skip
    mlflow.set_tags(
        {
            "trustflow.device": network.device_,
            "trustflow.warm_start.source": network.warm_start_["source"] or "none",
            "trustflow.warm_start.reason": network.warm_start_["reason"],
        }
    )


def _log_as(path: Path, artifact_dir: str, name: str) -> None:
    """Log a content-addressed workspace file under a readable, stable name."""
    with tempfile.TemporaryDirectory(prefix="trustflow-artifact-") as tmp:
        target = Path(tmp) / name
        shutil.copyfile(path, target)
        mlflow.log_artifact(str(target), artifact_dir)


def _metric_key(feature: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", feature.replace(" & ", "_x_"))


def _log_audit(audited: AuditedCandidate) -> None:
    """Into the active candidate run: disparities as metrics, the audit, charts and verdict."""
    audit = audited.audit
    mlflow.log_metrics(
        {
            f"fairness.{_metric_key(feature)}.{metric}": value
            for feature, result in audit.features.items()
            for metric, value in result.disparities().items()
            if value is not None
        }
    )
    mlflow.set_tags(
        {FAIRNESS_PASSED_TAG: str(audit.passed).lower(), "trustflow.fairness": audit.reason()}
    )
    _log_as(audited.report_json.path, "fairness", "audit.json")
    for feature, chart in audited.charts.items():
        _log_as(chart.path, "fairness", f"{_metric_key(feature)}.png")


def _log_privacy(
    privacy: PrivacySummary, release: PrivateRelease | None, utility_report: str | None
) -> None:
    """The run's privacy section: what was spent and left, the release used, what it covers,
    and the privacy-utility report when one is given."""
    mlflow.set_tags(
        {
            "trustflow.privacy.mode": privacy.mode,
            "trustflow.privacy.release_id": privacy.release_id or "none",
            "trustflow.privacy.reused": str(privacy.reused).lower(),
        }
    )
    mlflow.log_metrics(
        {
            "privacy.epsilon_spent": privacy.epsilon_spent,
            "privacy.release_epsilon": privacy.release_epsilon,
            "privacy.budget_remaining": privacy.budget_remaining,
        }
    )
    mlflow.log_dict(privacy.model_dump(mode="json"), "privacy/summary.json")
    if release is not None:
        mlflow.log_dict(release.model_dump(mode="json"), "privacy/release.json")
    if utility_report is not None:
        plot = Path(utility_report)
        for path in (plot, plot.with_suffix(".json")):
            if path.is_file():
                mlflow.log_artifact(str(path), "privacy/utility")


def _log_explanation(explained: ExplainedModel, artifact_dir: str) -> None:
    stem = f"{explained.explanation.model}-{explained.explanation.method}"
    _log_as(explained.json_file.path, artifact_dir, f"{stem}.json")
    _log_as(explained.png.path, artifact_dir, f"{stem}.png")
    _log_as(explained.html.path, artifact_dir, f"{stem}.html")


@task(name="warm-start", cache_policy=NO_CACHE, persist_result=False)
def find_warm_start(
    registry: RegistryConfig, data_md5: str, ws: Workspace, kind: str
) -> tuple[WarmStart | None, str]:
    """The champion's network weights, when the champion is a network trained on other data;
    else None and why (the network candidates then start from scratch)."""
    configure(ws)
    client = MlflowClient()
    name, alias = registry.model_name, registry.alias
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None, f"no {name}@{alias} yet: cold start"
    uri = f"models:/{name}/{version.version}"
    if version.tags.get(CANDIDATE_KIND_TAG) != kind:
        candidate = version.tags.get("trustflow.candidate", "?")
        return (
            None,
            f"{name}@{alias} is v{version.version} ({candidate}), not a network: cold start",
        )
    if version.tags.get("trustflow.data.md5") == data_md5:
        return None, f"{uri} was trained on this data version: cold start"
    model = mlflow.sklearn.load_model(uri)
    network = model.steps[-1][1]
    return network.warm_start(uri), f"fine-tunes from {uri}"


class VersionFacts(BaseModel):
    """What every registered version records, whatever the pipeline: where it came from, its
    gates' verdicts and its held-out metrics (the model card and the server read them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    candidate: str
    kind: str
    run_id: str  # the pipeline's run: its seen rows, config and lineage
    lineage: Lineage
    parity_passed: bool
    parity: str
    fairness_passed: bool
    fairness: str
    metrics: dict[str, float]

    def tags(self) -> dict[str, str]:
        return {
            "trustflow.candidate": self.candidate,
            CANDIDATE_KIND_TAG: self.kind,
            "trustflow.run_id": self.run_id,
            "trustflow.data.md5": self.lineage.data.md5,
            GIT_REVISION_TAG: self.lineage.git_revision or "unknown",
            PARITY_PASSED_TAG: str(self.parity_passed).lower(),
            "trustflow.onnx.parity": self.parity,
            FAIRNESS_PASSED_TAG: str(self.fairness_passed).lower(),
            "trustflow.fairness": self.fairness[:5000],
            **{f"trustflow.metric.{k}": f"{v:.6f}" for k, v in self.metrics.items()},
        }


@task(name="register", cache_policy=NO_CACHE, persist_result=False)
def register_best(
    run: TrackedRun,
    best: EvaluatedCandidate,
    export: ExportedCandidate,
    audited: AuditedCandidate,
    lineage: Lineage,
    registry: RegistryConfig,
) -> tuple[str, bool]:
    """Register the best candidate as a version of ``registry.model_name``; a version with the
    same content (native and ONNX hashes) is reused instead of duplicated."""
    return register_version(
        registry.model_name,
        content_tags(best.candidate.model.sha256, export),
        run.model_uris[best.candidate.name],
        run.candidate_runs[best.candidate.name],
        VersionFacts(
            candidate=best.candidate.name,
            kind=best.candidate.config.kind,
            run_id=run.run_id,
            lineage=lineage,
            parity_passed=export.passed,
            parity=export.reason(),
            fairness_passed=audited.audit.passed,
            fairness=audited.audit.reason(),
            metrics=best.evaluation.metrics.model_dump(),
        ),
    )


def version_model_id(version: Any) -> str | None:
    """The logged model a registered version points at (its source is ``models:/<model id>``;
    the SQL registry leaves ``model_id`` itself empty)."""
    source = str(version.source or "")
    return version.model_id or (
        source.removeprefix("models:/") if source.startswith("models:/") else None
    )


def register_version(
    name: str, content: dict[str, str], model_uri: str, run_id: str, facts: VersionFacts
) -> tuple[str, bool]:
    """A new version of ``name`` for the logged model ``model_uri``, or the existing version with
    the same content tags (native and ONNX hashes) whose model is whole; (version, whether it is
    new). A model that is not whole is never registered."""
    client = MlflowClient()
    existing: list[Any]
    try:
        query = f"name='{name}' and {_content_filter(content)}"
        existing = list(client.search_model_versions(query))
    except MlflowException:  # the registered model does not exist yet
        existing = []
    for version in sorted(existing, key=lambda v: int(v.version)):
        model_id = version_model_id(version)
        if model_id and logged_model_problem(model_id) is None:
            return str(version.version), False
    model_id = model_uri.removeprefix("models:/")
    problem = logged_model_problem(model_id)
    if problem is not None:
        raise IncompleteModel(f"{model_uri} is not whole ({problem}); no version was registered")
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(
        name, source=model_uri, run_id=run_id, model_id=model_id, tags={**content, **facts.tags()}
    )
    return str(version.version), True


SEEN_ROWS_ARTIFACT = "data/seen_rows.npy"
# Fewer test rows than this that the champion never trained on (after a large data change, say)
# make a comparison too noisy: the recorded held-out scores are compared instead.
MIN_COMPARISON_ROWS = 100


def log_seen_rows(run_id: str, *data: DataRef) -> None:
    """The fingerprints of the rows this run's models learned from (train and valid), so a later
    run compares them only on rows they never saw."""
    with tempfile.TemporaryDirectory(prefix="trustflow-rows-") as tmp:
        path = Path(tmp) / Path(SEEN_ROWS_ARTIFACT).name
        np.save(path, seen_rows(*(read_frame(d) for d in data)))
        MlflowClient().log_artifact(run_id, str(path), str(Path(SEEN_ROWS_ARTIFACT).parent))


def _seen_by(version: Any) -> np.ndarray | None:
    """The training-row fingerprints of a registered version's run; None for a version whose
    run did not record them (registry errors propagate)."""
    run_id = version.tags.get("trustflow.run_id")
    if run_id is None:
        return None
    client = MlflowClient()
    folder = str(Path(SEEN_ROWS_ARTIFACT).parent)
    if SEEN_ROWS_ARTIFACT not in {a.path for a in client.list_artifacts(run_id, folder)}:
        return None
    with tempfile.TemporaryDirectory(prefix="trustflow-rows-") as tmp:
        return np.asarray(np.load(client.download_artifacts(run_id, SEEN_ROWS_ARTIFACT, tmp)))


Scorer = Callable[[Any, pd.DataFrame], float]


def compare_with_champion(
    champion: Any,
    registry: RegistryConfig,
    test: pd.DataFrame,
    target: str,
    challenger: Any,
    held_out: float,
    score: Scorer,
) -> Comparison:
    """Score ``challenger`` and the registered version ``champion`` on the rows of ``test`` that
    the champion never trained on. When too few are left (or the champion did not record its
    rows), compare their held-out scores as recorded."""
    label = f"v{champion.version}"
    recorded = champion.tags.get(f"trustflow.metric.{registry.metric}")

    def as_recorded(why: str) -> Comparison:
        value = float(recorded) if recorded is not None else None
        basis = f"held-out scores as recorded ({why})"
        return Comparison(challenger=held_out, champion=value, rows=None, md5=None, basis=basis)

    seen = _seen_by(champion)
    if seen is None:
        return as_recorded(f"{label} has no record of its training rows")
    fresh = test[unseen(test, seen)].reset_index(drop=True)
    if len(fresh) < MIN_COMPARISON_ROWS or fresh[target].nunique() < 2:
        return as_recorded(f"only {len(fresh)} test rows are new to {label}")
    model = mlflow.sklearn.load_model(f"models:/{registry.model_name}/{champion.version}")
    try:
        champion_score = score(model, fresh)
    except (KeyError, ValueError) as exc:  # another schema: the champion cannot read these rows
        return as_recorded(f"{label} cannot score this data: {exc}")
    return Comparison(
        challenger=score(challenger, fresh),
        champion=champion_score,
        rows=len(fresh),
        md5=rows_digest(fresh),
        basis=f"{len(fresh):,} test rows {label} never trained on",
    )


def tabular_score(schema: DatasetSchema, metric: str) -> Scorer:
    """A tabular model's ``metric`` on a frame of the schema's rows."""

    def score(model: Any, frame: pd.DataFrame) -> float:
        features, target = features_and_target(frame, schema)
        return float(getattr(evaluate_model(model, features, target).metrics, metric))

    return score


@task(name="promote", cache_policy=NO_CACHE, persist_result=False)
def promote(
    version: str,
    new_version: bool,
    model: ArtifactRef,
    held_out: float,
    registry: RegistryConfig,
    test: DataRef,
    target: str,
    score: Scorer,
) -> Promotion:
    """Move the alias to ``version`` (the registered ``model``, whose held-out score is
    ``held_out``) only if it beats the champion on the configured metric, both scored by
    ``score`` on test rows the champion never trained on."""
    return decide_promotion(
        version,
        new_version,
        held_out,
        registry,
        lambda champion: compare_with_champion(
            champion,
            registry,
            read_frame(test),
            target,
            load_artifact(model),
            held_out,
            score,
        ),
    )


PROMOTION_ATTEMPTS = 3  # decisions against a champion that keeps moving, before giving up


def current_alias(name: str, alias: str) -> Any | None:
    """The version ``name@alias`` points at, or None when there is none (the model or the alias
    does not exist yet). Any other registry error propagates."""
    try:
        return MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def decide_promotion(
    version: str,
    new_version: bool,
    held_out: float,
    registry: RegistryConfig,
    compare: Callable[[Any], Comparison],
) -> Promotion:
    """Decide with :func:`trustflow.promotion.decide` against the current champion
    (``compare(champion)`` scores the two) and move the alias when it says so.

    Compare-and-set: just before the alias moves, it is read again. If another run moved it
    after this one decided, this run decides again against the new champion; it never
    overwrites a champion it did not compare with. Registry errors propagate: a failed read
    never passes for "no champion yet"."""
    client = MlflowClient()
    name, alias = registry.model_name, registry.alias
    for _ in range(PROMOTION_ATTEMPTS):
        champion = current_alias(name, alias)
        previous = str(champion.version) if champion is not None else None
        comparison = compare(champion) if previous not in (None, version) else None
        decision = decide(
            version, previous, comparison, registry.metric, registry.min_improvement, alias
        )
        if decision.promote:
            now = current_alias(name, alias)
            if (str(now.version) if now is not None else None) != previous:
                continue  # moved by another run since it was read: decide again
            client.set_registered_model_alias(name, alias, version)
        return Promotion(
            name=name,
            version=version,
            new_version=new_version,
            promoted=decision.promote or previous == version,
            alias=alias,
            previous_champion=previous,
            challenger_score=comparison.challenger if comparison else held_out,
            champion_score=comparison.champion if comparison else None,
            comparison_rows=comparison.rows if comparison else None,
            comparison_md5=comparison.md5 if comparison else None,
            comparison=comparison.basis if comparison else None,
            reason=decision.reason,
        )
    raise PromotionConflict(
        f"{name}@{alias} was moved by other runs {PROMOTION_ATTEMPTS} times while this run "
        f"decided on v{version}; it was left where they put it"
    )


@task(name="model-card", cache_policy=NO_CACHE, persist_result=False)
def log_model_card(run_id: str, name: str, version: str, card: str) -> str:
    """Log the card to the pipeline run, make it the version's description (the registry UI
    renders Markdown) and tag the version with the card's artifact URI, which is returned."""
    client = MlflowClient()
    filename = f"{name}-v{version}.md"
    client.log_text(run_id, card, f"model_card/{filename}")
    uri = f"{client.get_run(run_id).info.artifact_uri}/model_card/{filename}"
    client.update_model_version(name, version, description=card)
    client.set_model_version_tag(name, version, MODEL_CARD_TAG, uri)
    return uri


def record_gate_failure(run_id: str, reason: str) -> None:
    client = MlflowClient()
    client.set_tag(run_id, "trustflow.model.promoted", "false")
    client.set_tag(run_id, "trustflow.model.reason", reason)
    client.set_tag(run_id, "mlflow.note.content", reason)


def record_outcome(run_id: str, promotion: Promotion) -> None:
    client = MlflowClient()
    client.set_tag(run_id, "trustflow.model.version", promotion.version)
    client.set_tag(run_id, "trustflow.model.promoted", str(promotion.promoted).lower())
    client.set_tag(run_id, "trustflow.model.reason", promotion.reason)
    if promotion.comparison is not None:
        client.set_tag(run_id, "trustflow.comparison", promotion.comparison)
        client.set_tag(run_id, "trustflow.comparison.rows", str(promotion.comparison_rows))
        client.set_tag(run_id, "trustflow.comparison.md5", str(promotion.comparison_md5))
    client.set_tag(
        run_id,
        "mlflow.note.content",
        f"Registered {promotion.name} v{promotion.version}: {promotion.reason}",
    )
    client.log_dict(run_id, promotion.model_dump(mode="json"), "promotion.json")


MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class RegistrySource:
    """Releases of a registered model for the inference server: ``models:/NAME@ALIAS`` follows
    the alias (a new champion is a new release), ``models:/NAME/VERSION`` stays put. Only the
    ONNX form is fetched, and only from versions that passed their parity and fairness gates."""

    def __init__(self, uri: str) -> None:
        match = MODEL_URI.match(uri)
        if match is None:
            raise ModelLoadError(
                f"model URI '{uri}': expected models:/NAME@ALIAS, models:/NAME/VERSION or a "
                "path to an .onnx file"
            )
        self.name, self.alias, self.version = match["name"], match["alias"], match["version"]
        self.description = uri

    def model_version(self) -> Any:
        client = MlflowClient()
        try:
            if self.alias is not None:
                return client.get_model_version_by_alias(self.name, self.alias)
            return client.get_model_version(self.name, self.version)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise ModelLoadError(
                    f"{self.description}: not in the registry at {mlflow.get_registry_uri()} "
                    f"({exc.message})"
                ) from None
            raise

    def fetch(self, version: Any) -> ModelRelease:
        label = f"{self.name} v{version.version}"
        if version.tags.get(PARITY_PASSED_TAG) != "true":
            reason = version.tags.get("trustflow.onnx.parity", "no ONNX parity result recorded")
            raise ModelRejected(f"{label} cannot be served: {reason}")
        if version.tags.get(FAIRNESS_PASSED_TAG) == "false":
            reason = version.tags.get("trustflow.fairness", "fairness gate failed")
            raise ModelRejected(f"{label} cannot be served: it failed the fairness gate ({reason})")
        with tempfile.TemporaryDirectory(prefix="trustflow-serve-") as tmp:
            try:
                path = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{self.name}/{version.version}/model.onnx", dst_path=tmp
                )
            except (MlflowException, OSError) as exc:
                raise ModelLoadError(f"{label} has no ONNX form to serve ({exc})") from None
            graph = Path(path).read_bytes()
        return ModelRelease(
            name=self.name,
            version=str(version.version),
            source=f"models:/{self.name}/{version.version}",
            graph=graph,
        )

    def load(self) -> ModelRelease:
        return self.fetch(self.model_version())

    def poll(self, current: ModelRelease) -> ModelRelease | None:
        if self.alias is None:
            return None
        version = self.model_version()
        return None if str(version.version) == current.version else self.fetch(version)
