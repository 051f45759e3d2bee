"""What a finished pipeline run left in MLflow, read back for people who did not watch it run
(`trustflow trigger` in a CI job): its outcome, each version it registered with its gates' verdicts,
and the model cards."""

from __future__ import annotations

import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient
from pydantic import BaseModel, ConfigDict

from tasks.tracking.tags import (
    ENCRYPTION_PASSED_TAG,
    ENVIRONMENT_SHA_TAG,
    FAIRNESS_PASSED_TAG,
    FLOW_RUN_TAG,
    PARITY_PASSED_TAG,
)

# (gate, tag saying whether it passed, tag with its verdict)
GATES = (
    ("onnx parity", PARITY_PASSED_TAG, "trustflow.onnx.parity"),
    ("fairness", FAIRNESS_PASSED_TAG, "trustflow.fairness"),
    ("encryption parity", ENCRYPTION_PASSED_TAG, "trustflow.encryption"),
)


class Gate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    passed: bool
    verdict: str


class VersionReport(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    candidate: str
    aliases: list[str]
    gates: list[Gate]
    environment_sha256: str | None


class PipelineReport(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    experiment_id: str
    status: str
    promoted: bool | None  # None when the run ended before deciding
    reason: str | None
    versions: list[VersionReport]
    model_cards: dict[str, str]  # artifact path -> Markdown


def pipeline_report(flow_run_id: str) -> PipelineReport | None:
    """The MLflow run the Prefect flow run ``flow_run_id`` opened, or None when it opened none
    (it failed before tracking)."""
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.`{FLOW_RUN_TAG}` = '{flow_run_id}'")
    if not runs:
        return None
    run = runs[0]
    tags = run.data.tags
    found = client.search_model_versions(f"tags.`trustflow.run_id` = '{run.info.run_id}'")
    with tempfile.TemporaryDirectory() as tmp:
        cards = {
            item.path: Path(client.download_artifacts(run.info.run_id, item.path, tmp)).read_text()
            for item in client.list_artifacts(run.info.run_id, "model_card")
        }
    # A search leaves aliases out on some stores; a version read by itself has them.
    versions = [client.get_model_version(v.name, v.version) for v in found]
    promoted = tags.get("trustflow.model.promoted")
    return PipelineReport(
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
        status=run.info.status,
        promoted=None if promoted is None else promoted == "true",
        reason=tags.get("trustflow.model.reason"),
        versions=[
            VersionReport(
                name=v.name,
                version=str(v.version),
                candidate=v.tags.get("trustflow.candidate", "?"),
                aliases=list(v.aliases or []),
                gates=[
                    Gate(
                        name=gate, passed=v.tags[passed] == "true", verdict=v.tags.get(verdict, "")
                    )
                    for gate, passed, verdict in GATES
                    if passed in v.tags
                ],
                environment_sha256=v.tags.get(ENVIRONMENT_SHA_TAG),
            )
            for v in sorted(versions, key=lambda v: (v.name, int(v.version)))
        ],
        model_cards=cards,
    )
