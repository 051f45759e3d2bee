"""Flow ``train-tabular``: ingest -> validate -> version -> split -> preprocess -> train
candidates -> evaluate -> export (ONNX + parity) -> track & register -> gates -> promote."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import flow
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict

from flows.progress import StageLog
from tasks import tracking
from tasks.data import ingest_dataset, split_dataset, validate_dataset, version_dataset
from tasks.export import ExportedCandidate, export_onnx
from tasks.train import EvaluatedCandidate, evaluate, preprocess, train
from trustflow.config import Metric, TabularConfig, lower_is_better
from trustflow.errors import GateFailed
from trustflow.workspace import Workspace


class DatasetSummary(BaseModel):
    name: str
    md5: str
    rows: int
    path: str
    dvc_file: str
    rows_dropped: int


class ModelSummary(BaseModel):
    name: str
    version: str
    alias: str | None  # the alias when this version holds it after the run
    candidate: str
    promoted: bool
    new_version: bool
    reason: str


class OnnxSummary(BaseModel):
    opset: int
    size_bytes: int
    max_abs_diff: float
    label_agreement: float
    passed: bool
    latency_us_single_row: float


class RunSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: str
    dataset: DatasetSummary
    model: ModelSummary
    metrics: dict[str, float]
    candidates: dict[str, dict[str, float]]
    onnx: OnnxSummary
    mlflow: dict[str, str]
    cache: dict[str, bool]  # stage -> served from Prefect's cache
    workspace: str


def pick_best(evaluated: list[EvaluatedCandidate], metric: Metric) -> EvaluatedCandidate:
    def score(item: EvaluatedCandidate) -> float:
        value = float(getattr(item.evaluation.metrics, metric))
        return -value if lower_is_better(metric) else value

    return max(evaluated, key=score)


DEFAULT_CONFIG = TabularConfig()


def _describe_exports(items: list[ExportedCandidate]) -> str:
    return ", ".join(
        f"{e.name} parity {'ok' if e.passed else 'FAILED'}"
        + (f" (max |diff| {e.report.parity.max_abs_diff:.1e})" if e.report else "")
        for e in items
    )


def _describe_evaluations(metric: str) -> Callable[[list[EvaluatedCandidate]], str]:
    def describe(items: list[EvaluatedCandidate]) -> str:
        return ", ".join(
            f"{e.candidate.name} {metric}={getattr(e.evaluation.metrics, metric):.4f}"
            for e in items
        )

    return describe


@flow(name="train-tabular", persist_result=False)
def train_tabular(
    config: TabularConfig = DEFAULT_CONFIG, workspace: str | None = None
) -> RunSummary:
    """Train the configured candidates on a versioned data set and promote the best one."""
    ws = Workspace.resolve(workspace)
    schema = config.data.dataset
    stages = StageLog()

    staged, origin = stages.run(
        "ingest",
        ingest_dataset,
        config.data,
        ws,
        detail=lambda r: f"{r[0].rows:,} rows from {r[1]}",
    )
    validated = stages.run(
        "validate",
        validate_dataset,
        staged,
        origin,
        config.data,
        ws,
        detail=lambda v: (
            f"{v.report.rows_out:,} rows kept, {v.report.rows_dropped:,} dropped "
            f"(missing: {v.report.missing_policy})"
        ),
    )
    lineage = stages.run(
        "version",
        version_dataset,
        validated,
        config.data.remote_url,
        ws,
        detail=lambda lin: f"md5 {lin.data.md5[:12]} -> {lin.remote}",
    )
    splits = stages.run(
        "split",
        split_dataset,
        lineage.data,
        config.split,
        schema.target.column,
        ws,
        detail=lambda s: f"train/valid/test {s.train.rows:,}/{s.valid.rows:,}/{s.test.rows:,}",
    )
    preprocessor = stages.run(
        "preprocess", preprocess, splits.train, schema, ws, detail=lambda _: "fitted on train"
    )
    trained = stages.gather(
        "train",
        [
            train.submit(splits.train, preprocessor, candidate, schema, config.train.seed, ws)
            for candidate in config.train.candidates
        ],
        detail=lambda items: ", ".join(f"{t.name} {t.fit_seconds:.1f}s" for t in items),
    )
    metric = config.registry.metric
    evaluated = stages.gather(
        "evaluate",
        [evaluate.submit(candidate, splits.test, schema, ws) for candidate in trained],
        detail=_describe_evaluations(metric),
    )
    exported: dict[str, ExportedCandidate] = {
        e.name: e
        for e in stages.gather(
            "export",
            [export_onnx.submit(t, splits.test, schema, config.onnx, ws) for t in trained],
            detail=_describe_exports,
        )
    }
    best = pick_best(evaluated, metric)

    target = tracking.open_tracking(config.tracking, ws)
    run = tracking.start_pipeline_run(
        target,
        run_name=f"{schema.name}-{lineage.data.md5[:8]}",
        tags={"trustflow.pipeline": "train-tabular", "trustflow.data.md5": lineage.data.md5},
    )
    try:
        run = stages.run(
            "track",
            tracking.track_pipeline,
            run,
            config,
            validated,
            lineage,
            evaluated,
            exported,
            splits.test,
            detail=lambda r: f"run {r.run_id}",
        )
        version, new_version = stages.run(
            "register",
            tracking.register_best,
            run,
            best,
            exported[best.candidate.name],
            lineage.data,
            config.registry,
            detail=lambda r: (
                f"{config.registry.model_name} v{r[0]}"
                + ("" if r[1] else " (identical model, no new version)")
            ),
        )
        # Gates run after everything is logged and registered: a rejected model keeps its audit
        # trail, and the alias never moves to it.
        best_export = exported[best.candidate.name]
        if not best_export.passed:
            reason = (
                f"{config.registry.model_name} v{version} ({best.candidate.name}) not promoted: "
                f"{best_export.reason()}"
            )
            tracking.record_gate_failure(run.run_id, reason)
            raise GateFailed(reason)
        promotion = stages.run(
            "promote",
            tracking.promote,
            version,
            new_version,
            best,
            config.registry,
            schema,
            splits.test,
            detail=lambda p: p.reason,
        )
        tracking.record_outcome(run.run_id, promotion)
    except BaseException:
        tracking.end_pipeline_run(run.run_id, ok=False)
        raise
    tracking.end_pipeline_run(run.run_id, ok=True)
    onnx_report = best_export.report
    assert onnx_report is not None  # the parity gate passed, so the export exists

    return RunSummary(
        state="COMPLETED",
        dataset=DatasetSummary(
            name=schema.name,
            md5=lineage.data.md5,
            rows=lineage.data.rows,
            path=str(lineage.data.path),
            dvc_file=lineage.dvc_file,
            rows_dropped=validated.report.rows_dropped,
        ),
        model=ModelSummary(
            name=promotion.name,
            version=promotion.version,
            alias=promotion.alias if promotion.promoted else None,
            candidate=best.candidate.name,
            promoted=promotion.promoted,
            new_version=promotion.new_version,
            reason=promotion.reason,
        ),
        metrics=best.evaluation.metrics.model_dump(),
        candidates={e.candidate.name: e.evaluation.metrics.model_dump() for e in evaluated},
        onnx=OnnxSummary(
            opset=onnx_report.opset,
            size_bytes=onnx_report.size_bytes,
            max_abs_diff=onnx_report.parity.max_abs_diff,
            label_agreement=onnx_report.parity.label_agreement,
            passed=onnx_report.parity.passed,
            latency_us_single_row=onnx_report.latency_us_single_row,
        ),
        mlflow={
            "tracking_uri": target.tracking_uri,
            "run_id": run.run_id,
            "experiment_id": run.experiment_id,
        },
        cache=stages.cached,
        workspace=str(ws.root),
    )


def run_pipeline(config: TabularConfig, workspace: Workspace) -> State[Any]:
    """Run ``train-tabular`` with Prefect's results kept inside the workspace; returns the final
    state (check ``state.is_completed()``; ``state.result(raise_on_failure=False)`` gives the
    summary or the error)."""
    runner: Any = ThreadPoolTaskRunner(max_workers=config.train.runner.max_workers)
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: workspace.results_dir}):
        return train_tabular.with_options(task_runner=runner)(
            config=config, workspace=str(workspace.root), return_state=True
        )
