"""Flow ``train-tabular``: ingest -> validate -> version -> split -> preprocess -> train
candidates (and fairness mitigations of them) -> evaluate -> export (ONNX + parity) -> fairness
audit -> pick the best candidate that passes the gates -> explain -> track & register -> model card
-> gates -> promote."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.futures import PrefectFuture
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict

from flows.interrupts import interrupted
from flows.progress import (
    StageLog,
    describe_audits,
    describe_budget,
    describe_card,
    describe_evaluations,
    describe_explanations,
    describe_exports,
    describe_ingest,
    describe_lineage,
    describe_private_release,
    describe_registration,
    describe_splits,
    describe_synthetic_copy,
    describe_tracked_run,
    describe_training,
    describe_validation,
    same,
)
from tasks.data import (
    Lineage,
    ValidatedData,
    ingest_dataset,
    split_dataset,
    validate_dataset,
    version_dataset,
)
from tasks.encryption import check_encryption
from tasks.export import ExportedCandidate, export_onnx
from tasks.privacy import (
    DpSgdLedger,
    PrivacySummary,
    check_budget,
    ledger_at,
    preprocess_private,
    privacy_off,
    synthesize_private,
)
from tasks.responsible import AuditedCandidate, ExplainedModel, audit_fairness, explain
from tasks.tracking import cards, champion, log, registry, runs, store
from tasks.tracking.champion import Promotion
from tasks.tracking.encryption import record_encryption
from tasks.tracking.runs import TrackedRun, TrackingTarget
from tasks.train import EvaluatedCandidate, TrainedCandidate, evaluate, mitigate, preprocess, train
from tasks.workspace import adopt_workspace
from trustflow.announce import github_token
from trustflow.config import CandidateConfig, Metric, TabularConfig, lower_is_better
from trustflow.crypto.gate import EncryptionReport
from trustflow.errors import ConfigError, GateFailed, NoCandidateTrained, TrustflowError
from trustflow.model_card import DataFacts, ModelCardFacts, render_model_card
from trustflow.models.neural import resolve_accelerator
from trustflow.privacy.dpsgd import training_statement
from trustflow.privacy.mechanisms import PrivateRelease
from trustflow.privacy.synthetic import synth_python
from trustflow.refs import ArtifactRef, SplitRefs
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
    mae_ratio: float | None = None  # a regressor's
    worst_group_mae: float | None = None


class EncryptionSummary(BaseModel):
    """The linear release for encrypted serving (encryption.enabled)."""

    name: str  # <registry.model_name>-linear
    version: str
    alias: str | None  # the alias when this version holds it after the run
    candidate: str
    promoted: bool
    passed: bool  # every gate, the encryption parity gate included
    reason: str
    max_abs_diff: float | None  # None when the parity check could not run
    label_agreement: float | None


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
    encryption: EncryptionSummary | None = None
    failed: dict[str, str] = {}  # candidate -> why it did not train
    # One line each: a candidate this data set cannot use, a fairness audit that did not run.
    notes: list[str] = []


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


@flow(name="train-tabular", persist_result=False)
def train_tabular(
    config: TabularConfig = DEFAULT_CONFIG, workspace: str | None = None
) -> RunSummary:
    """Train the configured candidates on a versioned data set and promote the best one."""
    ws = Workspace.resolve(workspace)
    stages = StageLog()
    # Before any row is read: settings, the workspace, the tracking server, the privacy budget.
    source_digest = preflight(config, ws, stages)
    # ingest -> validate -> version (DVC) -> split -> preprocess (differentially private or not)
    data = prepare_data(config, ws, stages, source_digest)
    # Every candidate, concurrently; mitigations wait for the candidate they post-process.
    # A candidate that fails to fit is recorded as failed; the others go on.
    private = config.privacy.mode == "training"
    recorded = {e.release_id for e in ledger_at(data.privacy).entries()} if private else set()
    trained, failed = train_candidates(config, ws, stages, data, source_digest)
    if private:  # the models are releases too
        privacy = with_dp_training(data.privacy, trained, recorded)
        data = data.model_copy(update={"privacy": privacy})
    # evaluate -> export (ONNX + parity) -> audit -> the best that passes the gates -> explain
    assessment = assess(config, ws, stages, data, trained, failed)
    # track -> register -> model card -> gates -> promote
    outcome = register_and_promote(config, ws, stages, data, assessment)
    return summarize(config, ws, stages, data, assessment, outcome)


class PreparedData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    validated: ValidatedData
    lineage: Lineage
    splits: SplitRefs
    preprocessor: ArtifactRef
    privacy: PrivacySummary
    release: PrivateRelease | None


class Assessment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    evaluated: list[EvaluatedCandidate]
    exported: dict[str, ExportedCandidate]
    audits: dict[str, AuditedCandidate]
    verdicts: dict[str, str | None]  # candidate -> None, or the first gate it fails
    best: EvaluatedCandidate
    best_explanation: ExplainedModel
    glassbox_explanations: dict[str, ExplainedModel]
    failed: dict[str, str]  # candidate -> why it did not train, in one line


class Outcome(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    target: TrackingTarget
    run: TrackedRun
    card_uri: str
    promotion: Promotion
    encryption: EncryptionSummary | None = None


def preflight(config: TabularConfig, ws: Workspace, stages: StageLog) -> str | None:
    """The checks that stop a run before any work; the source's digest when privacy is on."""
    utility_report = config.privacy.utility_report
    if utility_report is not None and not Path(utility_report).is_file():
        raise ConfigError(f"privacy.utility_report: {utility_report} is not a file")
    if any(c.model_kind.network for c in config.candidates):
        resolve_accelerator(config.trainer.accelerator)  # cuda without a GPU stops here
    if config.registry.announce_to:
        github_token(config.registry.announce_to, os.environ)
    stages.run("workspace", adopt_workspace, same)(ws=ws)
    stages.run("tracking", runs.check_tracking_server, same)(ws=ws)
    if config.privacy.mode == "off":
        return None
    if config.privacy.mode == "synthetic":
        synth_python(config.privacy.synthetic)  # its environment, before any row is read
    # A run the recorded releases leave no budget for stops here.
    budget = stages.run("privacy", check_budget, describe_budget(config))
    dp_sgd = config.candidates if config.privacy.mode == "training" else ()
    return budget(
        privacy=config.privacy, data=config.data, ws=ws, candidates=dp_sgd, seed=config.train.seed
    )


def prepare_data(
    config: TabularConfig, ws: Workspace, stages: StageLog, source_digest: str | None
) -> PreparedData:
    staged, origin = stages.run("ingest", ingest_dataset, describe_ingest)(cfg=config.data, ws=ws)
    validated = stages.run("validate", validate_dataset, describe_validation)(
        staged=staged, origin=origin, cfg=config.data, split=config.split, ws=ws
    )
    lineage = stages.run("version", version_dataset, describe_lineage)(
        data=validated.data, origin=validated.origin, remote_url=config.data.remote_url, ws=ws
    )
    schema = config.data.dataset
    splits = stages.run("split", split_dataset, describe_splits)(
        data=lineage.data,
        cfg=config.split,
        target=schema.target.column,
        ws=ws,
        stratify=schema.classification,
    )
    if config.privacy.mode == "off":
        fitted = stages.run("preprocess", preprocess, lambda _: "fitted on train")
        preprocessor = fitted(train=splits.train, schema=schema, ws=ws)
        privacy = privacy_off(config.privacy, lineage.data.md5, ws)
        release = None
    elif config.privacy.mode == "synthetic":
        # From here on the training split is the DP copy; validation and test stay real.
        synthesized = stages.run("synthesize", synthesize_private, describe_synthetic_copy)
        copy, privacy = synthesized(
            train=splits.train,
            dataset_md5=lineage.data.md5,
            source=source_digest,
            privacy=config.privacy,
            data=config.data,
            ws=ws,
        )
        splits = splits.model_copy(update={"train": copy})
        fitted = stages.run("preprocess", preprocess, lambda _: "fitted on the synthetic copy")
        preprocessor = fitted(train=splits.train, schema=schema, ws=ws)
        release = None
    else:
        private = stages.run("preprocess", preprocess_private, describe_private_release)
        preprocessor, privacy, release = private(
            train=splits.train,
            dataset_md5=lineage.data.md5,
            source=source_digest,
            privacy=config.privacy,
            data=config.data,
            ws=ws,
        )
    return PreparedData(
        validated=validated,
        lineage=lineage,
        splits=splits,
        preprocessor=preprocessor,
        privacy=privacy,
        release=release,
    )


def train_candidates(
    config: TabularConfig,
    ws: Workspace,
    stages: StageLog,
    data: PreparedData,
    source_digest: str | None = None,
) -> tuple[list[TrainedCandidate], dict[str, str]]:
    """The trained candidates, and why each of the others failed. Networks get the trainer
    settings and, when the champion is one, its weights; the other kinds get None for both,
    which keeps those out of their cache keys. In privacy.mode: training every candidate
    trains by DP-SGD, its release recorded in the ledger."""
    networks = [c for c in config.candidates if c.model_kind.network]
    private = config.privacy.mode == "training"
    warm = None
    if config.trainer.warm_start and networks:
        warm, _ = stages.run("warm-start", registry.find_warm_start, lambda found: found[1])(
            registry=config.registry,
            data_md5=data.lineage.data.md5,
            ws=ws,
            kind=networks[0].kind,
            private=private,
        )
    schema, splits, seed = config.data.dataset, data.splits, config.train.seed
    dp_ledger = (
        DpSgdLedger(
            privacy=config.privacy,
            dataset=schema.name,
            dataset_md5=data.lineage.data.md5,
            source_digest=source_digest,
            missing=config.data.missing,
        )
        if private
        else None
    )

    def waves(done: dict[str, TrainedCandidate]) -> dict[str, PrefectFuture[TrainedCandidate]]:
        """The base candidates first, then each mitigation whose base trained (Prefect runs
        the mitigations concurrently, once every base has finished)."""
        if not submitted:
            wave = {
                cfg.name: train.submit(
                    train=splits.train,
                    valid=splits.valid,
                    preprocessor=data.preprocessor,
                    cfg=cfg,
                    schema=schema,
                    seed=seed,
                    trainer=config.trainer if cfg.model_kind.network else None,
                    warm=warm if cfg.model_kind.network else None,
                    ws=ws,
                    dp=config.privacy.training if private else None,
                    dp_ledger=dp_ledger,
                )
                for cfg in config.candidates
                if cfg.base is None
            }
        else:
            wave = {
                cfg.name: mitigate.submit(
                    base=done[cfg.base],
                    valid=splits.valid,
                    cfg=cfg,
                    schema=schema,
                    seed=seed,
                    ws=ws,
                )
                for cfg in config.candidates
                if cfg.base in done and cfg.name not in submitted
            }
        submitted.update(wave)
        return wave

    submitted: set[str] = set()
    trained, errors = stages.gather_surviving("train", waves, candidate_failure, describe_training)
    failed = {
        cfg.name: (
            candidate_failure_reason(cfg, errors[cfg.name])
            if cfg.name in errors
            else f"candidate '{cfg.name}' ({cfg.kind}) not trained: its base '{cfg.base}' failed"
        )
        for cfg in config.candidates
        if cfg.name not in {t.name for t in trained}
    }
    if not trained:
        raise NoCandidateTrained("no candidate trained: " + "; ".join(failed.values()))
    order = [cfg.name for cfg in config.candidates]
    return sorted(trained, key=lambda t: order.index(t.name)), failed


def with_dp_training(
    privacy: PrivacySummary, trained: list[TrainedCandidate], recorded: set[str]
) -> PrivacySummary:
    """The run's privacy summary once its DP-SGD candidates trained: what they spent (those not
    ``recorded`` before training; a model Prefect's cache returned spent nothing now) and what
    the chosen model guarantees: the best is chosen among all of them, so their ε add up."""
    entries = {e.release_id: e for e in ledger_at(privacy).entries()}
    releases = {t.name: entries[t.dp_release] for t in trained if t.dp_release in entries}
    spent_now = sum(e.epsilon for e in releases.values() if e.release_id not in recorded)
    epsilon = privacy.release_epsilon + sum(e.epsilon for e in releases.values())
    delta = privacy.delta + sum(e.delta for e in releases.values())
    plans = {name: e.training for name, e in releases.items() if e.training is not None}
    statement = (
        training_statement(plans, privacy.release_epsilon, epsilon, delta)
        if plans
        else privacy.statement
    )
    return privacy.model_copy(
        update={
            "epsilon_spent": privacy.epsilon_spent + spent_now,
            "budget_remaining": max(privacy.budget_remaining - spent_now, 0.0),
            "model_epsilon": epsilon,
            "model_delta": delta,
            "dp_sgd": plans,
            "training_releases": [e.release_id for e in releases.values()],
            "statement": statement,
        }
    )


def candidate_failure(error: BaseException) -> bool:
    """A candidate's own failure (its fit raised: a degenerate group, a diverging network, a
    converter bug) fails that candidate only. Our errors (a config or data problem, a full
    disk), the system's, and interrupts fail the run."""
    return isinstance(error, Exception) and not isinstance(
        error, (TrustflowError, OSError, MemoryError)
    )


def candidate_failure_reason(cfg: CandidateConfig, error: BaseException) -> str:
    """One line: the candidate, and the library's own message (its first line)."""
    message = (str(error).strip().splitlines() or [""])[0][:300]
    return f"candidate '{cfg.name}' ({cfg.kind}) failed to train: {type(error).__name__}: {message}"


def assess(
    config: TabularConfig,
    ws: Workspace,
    stages: StageLog,
    data: PreparedData,
    trained: list[TrainedCandidate],
    failed: dict[str, str],
) -> Assessment:
    schema, test, metric = config.data.dataset, data.splits.test, config.registry.metric
    evaluated = stages.gather(
        "evaluate",
        [evaluate.submit(candidate=t, test=test, schema=schema, ws=ws) for t in trained],
        detail=describe_evaluations(metric),
    )
    exports = [
        export_onnx.submit(candidate=t, test=test, schema=schema, cfg=config.onnx, ws=ws)
        for t in trained
    ]
    exported = {e.name: e for e in stages.gather("export", exports, detail=describe_exports)}
    audit_runs = [
        audit_fairness.submit(
            candidate=t,
            test=test,
            schema=schema,
            sensitive_features=config.sensitive_features,
            cfg=config.fairness,
            ws=ws,
        )
        for t in trained
    ]
    audits = {a.name: a for a in stages.gather("audit", audit_runs, detail=describe_audits)}
    verdicts = {
        e.candidate.name: gate_verdict(exported[e.candidate.name], audits[e.candidate.name])
        for e in evaluated
    }
    # The best candidate that passes every gate; when none does, the best one all the same, so it
    # is registered with its audit trail and the run fails on its gate.
    eligible = [e for e in evaluated if verdicts[e.candidate.name] is None]
    best = pick_best(eligible or evaluated, metric)

    def explaining(candidate: TrainedCandidate, glassbox: bool) -> PrefectFuture[ExplainedModel]:
        return explain.submit(
            candidate=candidate,
            train=data.splits.train,
            test=test,
            schema=schema,
            rows=config.explain.rows,
            seed=config.train.seed,
            ws=ws,
            glassbox=glassbox,
        )

    glass_boxes = [t for t in trained if t.config.model_kind.glass_box]
    explained = stages.gather(
        "explain",
        [explaining(best.candidate, glassbox=False)]
        + [explaining(t, glassbox=True) for t in glass_boxes],
        detail=describe_explanations,
    )
    return Assessment(
        evaluated=evaluated,
        exported=exported,
        audits=audits,
        verdicts=verdicts,
        best=best,
        best_explanation=explained[0],
        glassbox_explanations={e.explanation.model: e for e in explained[1:]},
        failed=failed,
    )


def register_and_promote(
    config: TabularConfig,
    ws: Workspace,
    stages: StageLog,
    data: PreparedData,
    assessment: Assessment,
) -> Outcome:
    """Everything is logged and registered before the gates run: a rejected model keeps its
    audit trail, and the alias never moves to it. The alias moves last."""
    schema, metric, best = config.data.dataset, config.registry.metric, assessment.best
    lineage, name = data.lineage, config.registry.model_name
    run = None
    try:
        stages.current = "track"
        target = runs.open_tracking(config.tracking, ws)
        run = runs.start_pipeline_run(
            target,
            run_name=f"{schema.name}-{lineage.data.md5[:8]}",
            tags={"trustflow.pipeline": "train-tabular", "trustflow.data.md5": lineage.data.md5},
        )
        log.log_seen_rows(run.run_id, data.splits.train, data.splits.valid)
        run = stages.run("track", log.track_pipeline, describe_tracked_run)(
            run=run,
            config=config,
            validated=data.validated,
            lineage=lineage,
            evaluated=assessment.evaluated,
            exported=assessment.exported,
            audits=assessment.audits,
            explanations=assessment.glassbox_explanations,
            best_explanation=assessment.best_explanation,
            privacy=data.privacy,
            release=data.release,
            test=data.splits.test,
            failed=assessment.failed,
        )
        version, new_version = stages.run(
            "register", registry.register_best, describe_registration(name)
        )(
            run=run,
            best=best,
            export=assessment.exported[best.candidate.name],
            audited=assessment.audits[best.candidate.name],
            lineage=lineage,
            registry=config.registry,
        )
        card = model_card(config, data, assessment, version, run.run_id)
        card_uri = stages.run("card", cards.log_model_card, describe_card)(
            run_id=run.run_id, name=name, version=version, card=card
        )
        create_markdown_artifact(
            markdown=card,
            key=f"model-card-{name}".lower().replace("_", "-"),
            description=f"Model card of {name} v{version}",
        )
        encryption = None
        if config.encryption.enabled:  # its own model, alias and gates, whatever the main one's
            encryption = register_linear(config, stages, data, assessment, run)
        verdict = assessment.verdicts[best.candidate.name]
        if verdict is not None:
            reason = f"{name} v{version} ({best.candidate.name}) not promoted: {verdict}" + (
                "" if len(assessment.evaluated) == 1 else "; no candidate passed the gates"
            )
            runs.record_gate_failure(run.run_id, reason)
            raise GateFailed(reason)
        promotion = stages.run("promote", champion.promote, lambda p: p.reason)(
            version=version,
            new_version=new_version,
            model=best.candidate.model,
            held_out=float(getattr(best.evaluation.metrics, metric)),
            registry=config.registry,
            test=data.splits.test,
            target=schema.target.column,
            score=champion.tabular_score(schema, metric),
        )
        champion.record_outcome(run.run_id, promotion)
        if config.registry.announce_to and champion.changed(promotion):
            stages.run("announce", champion.announce, lambda a: a.detail)(
                promotion=promotion, repository=config.registry.announce_to, run_id=run.run_id
            )
    except BaseException as exc:
        # A tracking server that went away mid-run gets one plain line, not MLflow's retry
        # trace; the alias moves last, so it has not moved.
        lost = store.lost_tracking_server(ws, stages.current)
        if lost is not None:
            raise lost from exc
        # An interrupt: the CLI marks this process's runs KILLED, naming the stage.
        if run is not None and not (isinstance(exc, KeyboardInterrupt) or interrupted()):
            runs.end_pipeline_run(run.run_id, ok=False)
        raise
    runs.end_pipeline_run(run.run_id, ok=True)
    return Outcome(
        target=target, run=run, card_uri=card_uri, promotion=promotion, encryption=encryption
    )


def register_linear(
    config: TabularConfig,
    stages: StageLog,
    data: PreparedData,
    assessment: Assessment,
    run: TrackedRun,
) -> EncryptionSummary:
    """The best linear-headed candidate as ``<model_name>-linear``: checked encrypted, logged,
    registered, carded, and promoted to its own alias only if it passes every gate."""
    schema, metric = config.data.dataset, config.registry.metric
    linear = [e for e in assessment.evaluated if e.candidate.config.model_kind.linear_head]
    eligible = [e for e in linear if assessment.verdicts[e.candidate.name] is None]
    best = pick_best(eligible or linear, metric)
    candidate = best.candidate.name
    export = assessment.exported[candidate]
    registry_cfg = config.registry.model_copy(
        update={"model_name": f"{config.registry.model_name}-linear"}
    )
    name = registry_cfg.model_name
    report = None
    if export.onnx is not None:
        report = stages.run("encrypt", check_encryption, lambda r: f"{candidate}: {r.reason()}")(
            export=export, test=data.splits.test, schema=schema, cfg=config.encryption
        )
    version, new_version = stages.run(
        "register-linear", registry.register_best, describe_registration(name)
    )(
        run=run,
        best=best,
        export=export,
        audited=assessment.audits[candidate],
        lineage=data.lineage,
        registry=registry_cfg,
    )
    if report is not None:
        record_encryption(run.run_id, name, version, report)
    card = model_card(config, data, assessment, version, run.run_id, best, name, report)
    cards.log_model_card(run_id=run.run_id, name=name, version=version, card=card)
    verdict = assessment.verdicts[candidate]
    if verdict is None and report is not None and not report.passed:
        verdict = report.reason()
    promoted, reason = False, f"{name} v{version} ({candidate}) not promoted: {verdict}"
    if verdict is None:
        promotion = stages.run("promote-linear", champion.promote, lambda p: p.reason)(
            version=version,
            new_version=new_version,
            model=best.candidate.model,
            held_out=float(getattr(best.evaluation.metrics, metric)),
            registry=registry_cfg,
            test=data.splits.test,
            target=schema.target.column,
            score=champion.tabular_score(schema, metric),
        )
        promoted, reason = promotion.promoted, promotion.reason
    return EncryptionSummary(
        name=name,
        version=version,
        alias=registry_cfg.alias if promoted else None,
        candidate=candidate,
        promoted=promoted,
        passed=verdict is None,
        reason=reason,
        max_abs_diff=report.max_abs_diff if report else None,
        label_agreement=report.label_agreement if report else None,
    )


def model_card(
    config: TabularConfig,
    data: PreparedData,
    assessment: Assessment,
    version: str,
    run_id: str,
    candidate: EvaluatedCandidate | None = None,
    model_name: str | None = None,
    encryption: EncryptionReport | None = None,
) -> str:
    """The card of ``version``: the best candidate's by default, or ``candidate``'s registered
    as ``model_name`` (the linear release)."""
    schema, lineage = config.data.dataset, data.lineage
    best = candidate or assessment.best
    export = assessment.exported[best.candidate.name]
    verdict = assessment.verdicts[best.candidate.name]
    if verdict is None and encryption is not None and not encryption.passed:
        verdict = encryption.reason()
    explanation = (
        assessment.best_explanation
        if best is assessment.best
        else assessment.glassbox_explanations.get(best.candidate.name)
    )
    return render_model_card(
        ModelCardFacts(
            model_name=model_name or config.registry.model_name,
            version=version,
            candidate=best.candidate.name,
            kind=best.candidate.config.kind,
            target=schema.target.column,
            task=schema.target.task,
            labels=schema.target_labels,
            data=DataFacts(
                name=schema.name,
                md5=lineage.data.md5,
                rows=lineage.data.rows,
                dvc_file=lineage.dvc_file,
                remote=lineage.remote,
                git_revision=lineage.git_revision,
                test_rows=data.splits.test.rows,
            ),
            metrics=best.evaluation.metrics.values(),
            selection_metric=config.registry.metric,
            fairness=assessment.audits[best.candidate.name].audit,
            explanation=explanation.explanation if explanation else None,
            onnx=export.report,
            onnx_reason=export.reason(),
            gates_passed=verdict is None,
            gate_reason="ONNX parity and fairness limits met" if verdict is None else verdict,
            privacy=data.privacy.statement,
            encryption=encryption.card_section() if encryption else None,
            failed=assessment.failed,
            left_out=config.left_out,
            mlflow_run_id=run_id,
        ),
        top_features=config.explain.top_features,
    )


def summarize(
    config: TabularConfig,
    ws: Workspace,
    stages: StageLog,
    data: PreparedData,
    assessment: Assessment,
    outcome: Outcome,
) -> RunSummary:
    schema, lineage, best = config.data.dataset, data.lineage, assessment.best
    promotion, run = outcome.promotion, outcome.run
    onnx_report = assessment.exported[best.candidate.name].report
    assert onnx_report is not None  # the parity gate passed, so the export exists
    return RunSummary(
        state="COMPLETED",
        dataset=DatasetSummary(
            name=schema.name,
            md5=lineage.data.md5,
            rows=lineage.data.rows,
            path=str(lineage.data.path),
            dvc_file=lineage.dvc_file,
            rows_dropped=data.validated.report.rows_dropped,
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
        metrics=best.evaluation.metrics.values(),
        candidates={e.candidate.name: e.evaluation.metrics.values() for e in assessment.evaluated},
        gates={name: verdict or "passed" for name, verdict in assessment.verdicts.items()},
        fairness={
            name: FairnessSummary(
                demographic_parity_difference=feature.demographic_parity_difference,
                demographic_parity_ratio=feature.demographic_parity_ratio,
                equalized_odds_difference=feature.equalized_odds_difference,
                gated=feature.gated,
                passed=feature.passed,
                mae_ratio=feature.mae_ratio,
                worst_group_mae=feature.worst_group_mae,
            )
            for name, feature in assessment.audits[best.candidate.name].audit.features.items()
        },
        model_card=outcome.card_uri,
        privacy=data.privacy,
        onnx=OnnxSummary(
            opset=onnx_report.opset,
            size_bytes=onnx_report.size_bytes,
            max_abs_diff=onnx_report.parity.max_abs_diff,
            label_agreement=onnx_report.parity.label_agreement,
            passed=onnx_report.parity.passed,
            latency_us_single_row=onnx_report.latency_us_single_row,
        ),
        mlflow={
            "tracking_uri": outcome.target.tracking_uri,
            "run_id": run.run_id,
            "experiment_id": run.experiment_id,
        },
        cache=stages.cached,
        workspace=str(ws.root),
        encryption=outcome.encryption,
        failed=assessment.failed,
        notes=config.notes,
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
