"""Flow ``train-tabular``: ingest -> validate -> version -> split -> preprocess -> train
candidates (and fairness mitigations of them) -> evaluate -> export (ONNX + parity) -> fairness
audit -> pick the best candidate that passes the gates -> explain -> track & register -> model card
-> gates -> promote."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict

from flows.progress import StageLog, describe_lineage, describe_splits
from tasks.data import ingest_dataset, split_dataset, validate_dataset, version_dataset
from tasks.export import ExportedCandidate, export_onnx
from tasks.privacy import PrivacySummary, check_budget, preprocess_private, privacy_off
from tasks.responsible import AuditedCandidate, audit_fairness, explain
from tasks.tracking import cards, champion, log, registry, runs, store
from tasks.train import EvaluatedCandidate, evaluate, mitigate, preprocess, train
from tasks.workspace import adopt_workspace
from trustflow.config import CandidateConfig, Metric, TabularConfig, lower_is_better
from trustflow.errors import ConfigError, GateFailed
from trustflow.model_card import DataFacts, ModelCardFacts, render_model_card
from trustflow.models.neural import resolve_accelerator
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
    # What the champion and this model were compared on (see trustflow.promotion.Comparison).
    comparison_rows: int | None = None
    comparison_md5: str | None = None


class OnnxSummary(BaseModel):
    opset: int
    size_bytes: int
    max_abs_diff: float
    label_agreement: float
    passed: bool
    latency_us_single_row: float


class FairnessSummary(BaseModel):
    demographic_parity_difference: float | None
    demographic_parity_ratio: float | None
    equalized_odds_difference: float | None
    gated: bool
    passed: bool


class RunSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: str
    dataset: DatasetSummary
    model: ModelSummary
    metrics: dict[str, float]
    candidates: dict[str, dict[str, float]]
    gates: dict[str, str]  # candidate -> "passed" or the first gate it failed
    onnx: OnnxSummary
    fairness: dict[str, FairnessSummary]  # the registered model's, per audited feature
    model_card: str  # artifact URI of the registered version's card
    privacy: PrivacySummary
    mlflow: dict[str, str]
    cache: dict[str, bool]  # stage -> served from Prefect's cache
    workspace: str


def pick_best(evaluated: list[EvaluatedCandidate], metric: Metric) -> EvaluatedCandidate:
    def score(item: EvaluatedCandidate) -> float:
        value = float(getattr(item.evaluation.metrics, metric))
        return -value if lower_is_better(metric) else value

    return max(evaluated, key=score)


DEFAULT_CONFIG = TabularConfig()


def gate_verdict(export: ExportedCandidate, audited: AuditedCandidate) -> str | None:
    """None when the candidate may be promoted, else the first gate it fails, in one line."""
    if not export.passed:
        return export.reason()
    if not audited.audit.passed:
        return audited.audit.reason()
    return None


def _describe_audits(items: list[AuditedCandidate]) -> str:
    return ", ".join(
        f"{a.name} {'ok' if a.audit.passed else 'FAILED'}"
        + "".join(
            f" {name} EOD {f.equalized_odds_difference:.3f}"
            for name, f in a.audit.features.items()
            if f.gated and f.equalized_odds_difference is not None
        )
        for a in items
    )


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

    utility_report = config.privacy.utility_report
    if utility_report is not None and not Path(utility_report).is_file():
        raise ConfigError(f"privacy.utility_report: {utility_report} is not a file")
    networks = [c for c in config.train.candidates if c.model_kind.network]
    if networks:
        resolve_accelerator(config.trainer.accelerator)  # cuda without a GPU stops here
    stages.run("workspace", adopt_workspace, ws, detail=lambda d: d)
    stages.run("tracking", runs.check_tracking_server, ws, detail=lambda d: d)
    source_digest = None
    if config.privacy.mode != "off":
        # Before any row is read: a run the recorded releases leave no budget for stops here.
        source_digest = stages.run(
            "privacy",
            check_budget,
            config.privacy,
            config.data,
            ws,
            detail=lambda digest: (
                f"ε {config.privacy.epsilon:g} requested of budget {config.privacy.budget:g}"
                if digest
                else "remote source: checked at release"
            ),
        )
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
        validated.data,
        validated.origin,
        config.data.remote_url,
        ws,
        detail=describe_lineage,
    )
    splits = stages.run(
        "split",
        split_dataset,
        lineage.data,
        config.split,
        schema.target.column,
        ws,
        detail=describe_splits,
    )
    release = None
    if config.privacy.mode == "off":
        preprocessor = stages.run(
            "preprocess", preprocess, splits.train, schema, ws, detail=lambda _: "fitted on train"
        )
        privacy = privacy_off(config.privacy, lineage.data.md5, ws)
    else:
        preprocessor, privacy, release = stages.run(
            "preprocess",
            preprocess_private,
            splits.train,
            lineage.data.md5,
            source_digest,
            config.privacy,
            config.data,
            ws,
            detail=lambda r: (
                f"DP release {r[1].release_id[:8] if r[1].release_id else ''} "
                + (
                    "reused (ε 0 spent)"
                    if r[1].reused
                    else f"ε {r[1].epsilon_spent:g} spent ({r[1].accounting})"
                )
                + f", {r[1].budget_remaining:g} of {r[1].budget:g} left"
            ),
        )
    warm = None
    if config.trainer.warm_start and networks:
        warm, _ = stages.run(
            "warm-start",
            registry.find_warm_start,
            config.registry,
            lineage.data.md5,
            ws,
            networks[0].kind,
            detail=lambda found: found[1],
        )

    def network_only(cfg: CandidateConfig, value: Any) -> Any:
        return value if cfg.model_kind.network else None

    base_runs = {
        cfg.name: train.submit(
            splits.train,
            splits.valid,
            preprocessor,
            cfg,
            schema,
            config.train.seed,
            network_only(cfg, config.trainer),
            network_only(cfg, warm),
            ws,
        )
        for cfg in config.train.candidates
        if cfg.base is None
    }
    trained = stages.gather(
        "train",
        [
            base_runs[cfg.name]
            if cfg.base is None
            # Prefect resolves a future passed as an argument: the mitigation waits for its base.
            else mitigate.submit(
                cast(Any, base_runs[cfg.base]), splits.valid, cfg, schema, config.train.seed, ws
            )
            for cfg in config.train.candidates
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
    audits: dict[str, AuditedCandidate] = {
        a.name: a
        for a in stages.gather(
            "audit",
            [
                audit_fairness.submit(
                    t, splits.test, schema, config.sensitive_features, config.fairness, ws
                )
                for t in trained
            ],
            detail=_describe_audits,
        )
    }
    verdicts = {
        e.candidate.name: gate_verdict(exported[e.candidate.name], audits[e.candidate.name])
        for e in evaluated
    }
    # The best candidate that passes every gate; when none does, the best one all the same, so it
    # is registered with its audit trail and the run fails on its gate.
    eligible = [e for e in evaluated if verdicts[e.candidate.name] is None]
    best = pick_best(eligible or evaluated, metric)
    glass_boxes = [t for t in trained if t.config.model_kind.glass_box]
    explain_args = (splits.train, splits.test, schema, config.explain.rows, config.train.seed, ws)
    explained = stages.gather(
        "explain",
        [explain.submit(best.candidate, *explain_args, glassbox=False)]
        + [explain.submit(t, *explain_args, glassbox=True) for t in glass_boxes],
        detail=lambda items: ", ".join(
            f"{e.explanation.model} ({e.explanation.method}): top "
            f"{e.explanation.importances[0].feature}"
            for e in items
        ),
    )
    best_explanation = explained[0]
    glassbox_explanations = {e.explanation.model: e for e in explained[1:]}

    run = None
    try:
        stages.current = "track"
        target = runs.open_tracking(config.tracking, ws)
        run = runs.start_pipeline_run(
            target,
            run_name=f"{schema.name}-{lineage.data.md5[:8]}",
            tags={"trustflow.pipeline": "train-tabular", "trustflow.data.md5": lineage.data.md5},
        )
        log.log_seen_rows(run.run_id, splits.train, splits.valid)
        run = stages.run(
            "track",
            log.track_pipeline,
            run,
            config,
            validated,
            lineage,
            evaluated,
            exported,
            audits,
            glassbox_explanations,
            best_explanation,
            privacy,
            release,
            splits.test,
            detail=lambda r: f"run {r.run_id}",
        )
        version, new_version = stages.run(
            "register",
            registry.register_best,
            run,
            best,
            exported[best.candidate.name],
            audits[best.candidate.name],
            lineage,
            config.registry,
            detail=lambda r: (
                f"{config.registry.model_name} v{r[0]}"
                + ("" if r[1] else " (identical model, no new version)")
            ),
        )
        best_export = exported[best.candidate.name]
        best_audit = audits[best.candidate.name]
        verdict = verdicts[best.candidate.name]
        card = render_model_card(
            ModelCardFacts(
                model_name=config.registry.model_name,
                version=version,
                candidate=best.candidate.name,
                kind=best.candidate.config.kind,
                target=schema.target.column,
                positive_label=schema.target.positive,
                data=DataFacts(
                    name=schema.name,
                    md5=lineage.data.md5,
                    rows=lineage.data.rows,
                    dvc_file=lineage.dvc_file,
                    remote=lineage.remote,
                    git_revision=lineage.git_revision,
                    test_rows=splits.test.rows,
                ),
                metrics=best.evaluation.metrics.model_dump(),
                selection_metric=metric,
                fairness=best_audit.audit,
                explanation=best_explanation.explanation,
                onnx=best_export.report,
                onnx_reason=best_export.reason(),
                gates_passed=verdict is None,
                gate_reason="ONNX parity and fairness limits met" if verdict is None else verdict,
                privacy=privacy.statement,
                mlflow_run_id=run.run_id,
            ),
            top_features=config.explain.top_features,
        )
        card_uri = stages.run(
            "card",
            cards.log_model_card,
            run.run_id,
            config.registry.model_name,
            version,
            card,
            detail=lambda uri: uri.rsplit("/", 2)[-2] + "/" + uri.rsplit("/", 1)[-1],
        )
        create_markdown_artifact(
            markdown=card,
            key=f"model-card-{config.registry.model_name}".lower().replace("_", "-"),
            description=f"Model card of {config.registry.model_name} v{version}",
        )
        # Gates run after everything is logged and registered: a rejected model keeps its audit
        # trail, and the alias never moves to it.
        if verdict is not None:
            reason = (
                f"{config.registry.model_name} v{version} ({best.candidate.name}) not promoted: "
                f"{verdict}" + ("" if len(evaluated) == 1 else "; no candidate passed the gates")
            )
            runs.record_gate_failure(run.run_id, reason)
            raise GateFailed(reason)
        promotion = stages.run(
            "promote",
            champion.promote,
            version,
            new_version,
            best.candidate.model,
            float(getattr(best.evaluation.metrics, metric)),
            config.registry,
            splits.test,
            schema.target.column,
            champion.tabular_score(schema, metric),
            detail=lambda p: p.reason,
        )
        champion.record_outcome(run.run_id, promotion)
    except BaseException as exc:
        # A tracking server that went away mid-run gets one plain line, not MLflow's retry
        # trace; the alias moves last, so it has not moved.
        lost = store.lost_tracking_server(ws, stages.current)
        if lost is not None:
            raise lost from exc
        if run is not None:
            runs.end_pipeline_run(run.run_id, ok=False)
        raise
    runs.end_pipeline_run(run.run_id, ok=True)
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
            comparison_rows=promotion.comparison_rows,
            comparison_md5=promotion.comparison_md5,
        ),
        metrics=best.evaluation.metrics.model_dump(),
        candidates={e.candidate.name: e.evaluation.metrics.model_dump() for e in evaluated},
        gates={name: verdict or "passed" for name, verdict in verdicts.items()},
        fairness={
            name: FairnessSummary(
                demographic_parity_difference=feature.demographic_parity_difference,
                demographic_parity_ratio=feature.demographic_parity_ratio,
                equalized_odds_difference=feature.equalized_odds_difference,
                gated=feature.gated,
                passed=feature.passed,
            )
            for name, feature in best_audit.audit.features.items()
        },
        model_card=card_uri,
        privacy=privacy,
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
