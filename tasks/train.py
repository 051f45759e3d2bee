"""Model tasks: fit the preprocessor, train candidates, evaluate them. All cached on content."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prefect import task
from pydantic import BaseModel, ConfigDict

from tasks.caching import CONTENT_CACHE, content_cache_except
from tasks.privacy import DpSgdLedger, record_dp_sgd
from trustflow.config import CandidateConfig, DatasetSchema, DpTrainingConfig, TrainerConfig
from trustflow.evaluate import (
    Evaluation,
    confusion_figure,
    evaluate_model,
    fit_figure,
    residual_figure,
    roc_figure,
)
from trustflow.failpoints import failpoint
from trustflow.io import dump_addressed, load_artifact, read_frame, save_png
from trustflow.models.candidates import train_candidate, train_network
from trustflow.models.mitigation import mitigate_candidate
from trustflow.models.neural import NetworkClassifier, WarmStart
from trustflow.models.preprocess import features_and_target, fit_preprocessor
from trustflow.refs import ArtifactRef, DataRef
from trustflow.workspace import Workspace


class TrainedCandidate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    config: CandidateConfig
    model: ArtifactRef
    fit_seconds: float
    # A network's per-epoch times: measured in this fit, kept out of the model file so that
    # equal training gives an equal file (and hash).
    epoch_seconds: tuple[float, ...] = ()
    # DP-SGD (privacy.mode: training): the ledger release this model's training spent.
    dp_release: str | None = None


class EvaluatedCandidate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    candidate: TrainedCandidate
    evaluation: Evaluation
    roc_png: ArtifactRef  # a regressor's: predicted against actual
    confusion_png: ArtifactRef  # a regressor's: its residuals


@task(name="preprocess", cache_policy=CONTENT_CACHE, persist_result=True)
def preprocess(train: DataRef, schema: DatasetSchema, ws: Workspace) -> ArtifactRef:
    fitted = fit_preprocessor(read_frame(train), schema)
    return dump_addressed(fitted, ws.artifacts_dir / "preprocess", "preprocessor")


@task(
    name="train",
    # Where a DP-SGD release is recorded does not change the model; privacy.training (``dp``)
    # does, and is in the key.
    cache_policy=content_cache_except("dp_ledger"),
    persist_result=True,
    task_run_name="train-{cfg.name}",
)
def train(
    train: DataRef,
    valid: DataRef,
    preprocessor: ArtifactRef,
    cfg: CandidateConfig,
    schema: DatasetSchema,
    seed: int,
    trainer: TrainerConfig | None,
    warm: WarmStart | None,
    ws: Workspace,
    dp: DpTrainingConfig | None = None,
    dp_ledger: DpSgdLedger | None = None,
) -> TrainedCandidate:
    """``trainer`` and ``warm`` are only given to network candidates (None for the others), so
    they never change another candidate's cache key. ``dp`` and ``dp_ledger`` (privacy.mode:
    training): the candidate trains by DP-SGD, its release recorded in the ledger first."""
    features, target = features_and_target(read_frame(train), schema)
    fitted = load_artifact(preprocessor)
    if not cfg.model_kind.network:
        task = schema.target.task
        return _fitted(lambda: train_candidate(fitted, features, target, cfg, seed, task), cfg, ws)
    trainer = trainer or TrainerConfig()
    plan, release = None, None
    if dp is not None and dp_ledger is not None:
        plan, entry = record_dp_sgd(cfg, schema, seed, len(target), dp_ledger, ws)
        release = entry.release_id
    loggers = tensorboard_loggers(trainer, ws, cfg.name, train)
    valid_set = features_and_target(read_frame(valid), schema)
    trained = _fitted(
        lambda: train_network(
            fitted,
            (features, target),
            valid_set,
            cfg,
            seed,
            trainer.accelerator,
            loggers,
            warm,
            schema.target.task,
            plan,
        ),
        cfg,
        ws,
    )
    return trained.model_copy(update={"dp_release": release})


def tensorboard_loggers(
    trainer: TrainerConfig, ws: Workspace, name: str, data: DataRef
) -> list[Any]:
    """The Lightning loggers a network trains with: TensorBoard event files under
    ``<workspace>/tensorboard/<name>/<data md5>-<time>`` (none when switched off)."""
    if not trainer.tensorboard:
        return []
    from lightning.pytorch.loggers import TensorBoardLogger

    version = f"{data.md5[:8]}-{time.strftime('%Y%m%d-%H%M%S')}"
    return [
        TensorBoardLogger(ws.tensorboard_dir, name=name, version=version, default_hp_metric=False)
    ]


def _fitted(fit: Callable[[], Any], cfg: CandidateConfig, ws: Workspace) -> TrainedCandidate:
    """Time ``fit``, store its model by content, describe it."""
    started = time.perf_counter()
    model = fit()
    seconds = time.perf_counter() - started
    ref = dump_addressed(model, ws.artifacts_dir / "models", cfg.name)
    failpoint("train.saved")
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    epochs = tuple(final.epoch_seconds()) if isinstance(final, NetworkClassifier) else ()
    return TrainedCandidate(
        name=cfg.name, config=cfg, model=ref, fit_seconds=seconds, epoch_seconds=epochs
    )


@task(
    name="mitigate",
    cache_policy=CONTENT_CACHE,
    persist_result=True,
    task_run_name="mitigate-{cfg.name}",
)
def mitigate(
    base: TrainedCandidate,
    valid: DataRef,
    cfg: CandidateConfig,
    schema: DatasetSchema,
    seed: int,
    ws: Workspace,
) -> TrainedCandidate:
    """Post-process a trained candidate for fairness, fitted on the validation split."""
    features, target = features_and_target(read_frame(valid), schema)
    fitted = load_artifact(base.model)
    return _fitted(lambda: mitigate_candidate(fitted, features, target, cfg, seed), cfg, ws)


@task(
    name="evaluate",
    cache_policy=CONTENT_CACHE,
    persist_result=True,
    task_run_name="evaluate-{candidate.name}",
)
def evaluate(
    candidate: TrainedCandidate, test: DataRef, schema: DatasetSchema, ws: Workspace
) -> EvaluatedCandidate:
    features, target = features_and_target(read_frame(test), schema)
    model = load_artifact(candidate.model)
    evaluation = evaluate_model(model, features, target, schema.target_labels)
    figures = ws.artifacts_dir / "figures"
    name = candidate.name
    if schema.classification:
        curve, curve_stem = roc_figure(evaluation, f"ROC: {name}"), f"roc-{name}"
        matrix = confusion_figure(evaluation, f"Confusion matrix: {name}", schema.target_labels)
        matrix_stem = f"confusion-{name}"
    else:  # the same two places: how well it fits, and how it errs
        curve, curve_stem = fit_figure(evaluation, f"Fit: {name}"), f"fit-{name}"
        matrix, matrix_stem = residual_figure(evaluation, f"Residuals: {name}"), f"residuals-{name}"
    return EvaluatedCandidate(
        candidate=candidate,
        evaluation=evaluation,
        roc_png=save_png(curve, figures, curve_stem),
        confusion_png=save_png(matrix, figures, matrix_stem),
    )
