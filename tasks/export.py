"""Export task: each trained candidate to ONNX, with its parity report (cached on content)."""

from __future__ import annotations

from prefect import task
from pydantic import BaseModel, ConfigDict

from tasks.caching import CONTENT_CACHE
from tasks.train import TrainedCandidate
from trustflow.config import DatasetSchema, OnnxConfig
from trustflow.export.onnx import NotExportable, OnnxReport, check_parity, convert_pipeline
from trustflow.io import load_artifact, read_frame, write_addressed
from trustflow.refs import ArtifactRef, DataRef
from trustflow.workspace import Workspace


class ExportedCandidate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    onnx: ArtifactRef | None  # None when the kind has no ONNX form
    report: OnnxReport | None
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.report is not None and self.report.parity.passed

    def reason(self) -> str:
        if self.report is None:
            return f"no ONNX form for '{self.name}': {self.error}"
        return self.report.parity.reason()


@task(
    name="export",
    cache_policy=CONTENT_CACHE,
    persist_result=True,
    task_run_name="export-{candidate.name}",
)
def export_onnx(
    candidate: TrainedCandidate,
    test: DataRef,
    schema: DatasetSchema,
    cfg: OnnxConfig,
    ws: Workspace,
) -> ExportedCandidate:
    model = load_artifact(candidate.model)
    try:
        converter = candidate.config.model_kind.onnx
        graph = convert_pipeline(model, schema, cfg, converter).SerializeToString()
    except NotExportable as exc:  # a kind with no ONNX form: a gate result, not a crash
        return ExportedCandidate(name=candidate.name, onnx=None, report=None, error=str(exc))
    path, sha = write_addressed(
        lambda tmp: tmp.write_bytes(graph), ws.artifacts_dir / "onnx", candidate.name, ".onnx"
    )
    report = check_parity(model, graph, read_frame(test), schema, cfg)
    return ExportedCandidate(
        name=candidate.name, onnx=ArtifactRef(path=path, sha256=sha), report=report
    )
