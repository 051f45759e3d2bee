"""Responsible-AI tasks: the fairness audit of each candidate and the global explanations.
Cached on content like training: an unchanged model on unchanged data is not audited again."""

from __future__ import annotations

import json

from prefect import task
from pydantic import BaseModel, ConfigDict

from tasks.caching import CONTENT_CACHE
from tasks.train import TrainedCandidate
from trustflow.config import DatasetSchema, FairnessConfig
from trustflow.explain import (
    GlobalExplanation,
    explain_black_box,
    explain_glassbox,
    importance_figure,
)
from trustflow.fairness import (
    FairnessAudit,
    audit_figure,
    audit_predictions,
    audit_regression,
    sensitive_groups,
)
from trustflow.io import load_artifact, read_frame, save_png, save_text
from trustflow.models.preprocess import features_and_target
from trustflow.refs import ArtifactRef, DataRef
from trustflow.workspace import Workspace


class AuditedCandidate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    audit: FairnessAudit
    report_json: ArtifactRef
    charts: dict[str, ArtifactRef]  # audited feature -> bar charts


class ExplainedModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    explanation: GlobalExplanation
    json_file: ArtifactRef
    png: ArtifactRef
    html: ArtifactRef


def _slug(feature: str) -> str:
    return feature.replace(" & ", "-x-").replace(" ", "_")


@task(
    name="audit",
    cache_policy=CONTENT_CACHE,
    persist_result=True,
    task_run_name="audit-{candidate.name}",
)
def audit_fairness(
    candidate: TrainedCandidate,
    test: DataRef,
    schema: DatasetSchema,
    sensitive_features: tuple[str, ...],
    cfg: FairnessConfig,
    ws: Workspace,
) -> AuditedCandidate:
    features, target = features_and_target(read_frame(test), schema)
    predicted = load_artifact(candidate.model).predict(features)
    groups = sensitive_groups(features, schema, sensitive_features)
    if schema.classification:
        audit = audit_predictions(
            candidate.name, groups, target, predicted, sensitive_features, cfg, schema.target_labels
        )
    else:
        audit = audit_regression(candidate.name, groups, target, predicted, sensitive_features, cfg)
    directory = ws.artifacts_dir / "fairness"
    charts = {
        name: save_png(
            audit_figure(feature, f"{candidate.name}: groups by {name}"),
            directory,
            f"{candidate.name}-{_slug(name)}",
        )
        for name, feature in audit.features.items()
    }
    report = save_text(
        json.dumps(audit.model_dump(mode="json"), indent=2), directory, candidate.name, ".json"
    )
    return AuditedCandidate(name=candidate.name, audit=audit, report_json=report, charts=charts)


def _saved(explanation: GlobalExplanation, html: str, ws: Workspace, stem: str) -> ExplainedModel:
    directory = ws.artifacts_dir / "explanations"
    return ExplainedModel(
        explanation=explanation,
        json_file=save_text(
            json.dumps(explanation.model_dump(mode="json"), indent=2), directory, stem, ".json"
        ),
        png=save_png(importance_figure(explanation), directory, stem),
        html=save_text(html, directory, stem, ".html"),
    )


@task(
    name="explain",
    cache_policy=CONTENT_CACHE,
    persist_result=True,
    task_run_name="explain-{candidate.name}",
)
def explain(
    candidate: TrainedCandidate,
    train: DataRef,
    test: DataRef,
    schema: DatasetSchema,
    rows: int,
    seed: int,
    ws: Workspace,
    glassbox: bool,
) -> ExplainedModel:
    """With ``glassbox``, an EBM's own explanation; otherwise (any model) InterpretML's
    model-agnostic Morris sensitivity on a sample of the test split."""
    model = load_artifact(candidate.model)
    if glassbox:
        explanation, html = explain_glassbox(model, candidate.name, rows=train.rows)
    else:
        features, _ = features_and_target(read_frame(test), schema)
        explanation, html = explain_black_box(
            model, candidate.name, features, schema, rows=rows, seed=seed
        )
    return _saved(explanation, html, ws, f"{candidate.name}-{explanation.method}")
