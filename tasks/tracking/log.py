"""What a pipeline run logs: config, lineage, data checks, gates, candidates and their
artifacts, and the rows its models learned from."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema, TensorSpec
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.data import Lineage, ValidatedData
from tasks.export import ExportedCandidate
from tasks.privacy import PrivacySummary
from tasks.responsible import AuditedCandidate, ExplainedModel
from tasks.tracking.models import MODEL_REQUIREMENTS, content_tags, log_model_once
from tasks.tracking.runs import TrackedRun, run_owner
from tasks.tracking.tags import FAIRNESS_PASSED_TAG, OWNER_TAG
from tasks.train import EvaluatedCandidate
from trustflow.config import (
    CategoricalColumn,
    DatasetSchema,
    TabularConfig,
)
from trustflow.data.fingerprint import seen_rows
from trustflow.io import load_artifact, read_frame
from trustflow.models.neural import NetworkClassifier
from trustflow.models.preprocess import features_and_target
from trustflow.privacy.mechanisms import PrivateRelease
from trustflow.refs import DataRef


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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
    failed: dict[str, str],
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
            }
            | {name: {"trained": False, "reason": reason} for name, reason in failed.items()}
            | {
                name: {"trained": False, "left_out": True, "reason": reason}
                for name, reason in config.left_out.items()
            },
            "gates.json",
        )
        mlflow.set_tags({f"trustflow.failed.{name}": reason for name, reason in failed.items()})
        mlflow.set_tags(
            {f"trustflow.left_out.{name}": reason for name, reason in config.left_out.items()}
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
                    {**item.evaluation.metrics.values(), "fit_seconds": candidate.fit_seconds}
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
    # Leaving the block ended the run FINISHED; it stays open through registration and
    # promotion, so a crash or an interrupt there leaves it RUNNING, to be marked KILLED.
    MlflowClient().update_run(run.run_id, status="RUNNING")
    return run.model_copy(update={"candidate_runs": candidate_runs, "model_uris": model_uris})


def log_training(network: NetworkClassifier, epoch_seconds: Sequence[float], run_id: str) -> None:
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
    if privacy.synthetic_report is not None:  # the copy against the real rows, per column
        report = privacy.synthetic_report
        mlflow.log_dict(report, "privacy/synthetic_marginals.json")
        mlflow.log_metrics(
            {f"privacy.synthetic.tvd.{name}": tvd for name, tvd in report["one_way_tvd"].items()}
            | {"privacy.synthetic.tvd_max": max(report["one_way_tvd"].values())}
        )
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


SEEN_ROWS_ARTIFACT = "data/seen_rows.npy"


def log_seen_rows(run_id: str, *data: DataRef) -> None:
    """The fingerprints of the rows this run's models learned from (train and valid), so a later
    run compares them only on rows they never saw."""
    with tempfile.TemporaryDirectory(prefix="trustflow-rows-") as tmp:
        path = Path(tmp) / Path(SEEN_ROWS_ARTIFACT).name
        np.save(path, seen_rows(*(read_frame(d) for d in data)))
        MlflowClient().log_artifact(run_id, str(path), str(Path(SEEN_ROWS_ARTIFACT).parent))
