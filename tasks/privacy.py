"""Privacy tasks: the budget check before any row is read, and the differentially private
preprocessing release recorded in (or reused from) the ledger. Never cached by Prefect: the
ledger is the cache, and it changes between runs."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from trustflow.config import CandidateConfig, DataConfig, DatasetSchema, PrivacyConfig
from trustflow.data.sources import source_digest
from trustflow.errors import ConfigError, PrivacyLedgerError
from trustflow.io import dump_addressed, file_digest, read_frame, write_frame_addressed
from trustflow.privacy.dpsgd import DpSgdPlan, plan_dp_sgd
from trustflow.privacy.ledger import (
    LedgerEntry,
    Measured,
    Planned,
    PrivacyLedger,
    Spend,
    release_key,
    settings_digest,
    synthetic_settings_digest,
    training_settings_digest,
)
from trustflow.privacy.mechanisms import (
    PrivateRelease,
    privacy_statement,
    private_preprocessor,
    release_statistics,
)
from trustflow.privacy.synthetic import (
    SyntheticRelease,
    marginal_report,
    synthesize,
    synthetic_statement,
)
from trustflow.refs import ArtifactRef, DataRef
from trustflow.workspace import Workspace


class PrivacySummary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: str
    accounting: str
    epsilon_spent: float  # by this run: 0 when off or when an earlier release was reused
    release_epsilon: float  # the guarantee of the release this run used (0 when off)
    delta: float
    budget: float
    budget_remaining: float
    dataset_md5: str
    release_id: str | None
    reused: bool
    ledger: str
    statement: str
    # privacy.mode: training, once the candidates trained: the model's guarantee (the
    # preprocessing release and every DP-SGD candidate, by basic composition), its DP-SGD plan.
    model_epsilon: float | None = None
    model_delta: float | None = None
    dp_sgd: dict[str, DpSgdPlan] = {}  # candidate -> its plan
    training_releases: list[str] = []
    # privacy.mode: synthetic: the copy's 1-way and 2-way TVD against the real training rows.
    synthetic_report: dict[str, Any] | None = None


class DpSgdLedger(BaseModel):
    """Where a DP-SGD candidate records its release: the data set version and source, and the
    privacy settings (budget, ledger). Kept out of the train task's cache key: a new budget does
    not retrain a model (``privacy.training``, which does, is in it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    privacy: PrivacyConfig
    dataset: str
    dataset_md5: str
    source_digest: str | None
    missing: str


def ledger_for(cfg: PrivacyConfig, ws: Workspace) -> PrivacyLedger:
    return PrivacyLedger(Path(cfg.ledger) if cfg.ledger else ws.state_dir / "privacy-ledger.json")


def ledger_at(summary: PrivacySummary) -> PrivacyLedger:
    """The ledger a run's privacy summary was made from."""
    return PrivacyLedger(Path(summary.ledger))


@task(name="privacy-budget", cache_policy=NO_CACHE, persist_result=False)
def check_budget(
    privacy: PrivacyConfig,
    data: DataConfig,
    ws: Workspace,
    candidates: tuple[CandidateConfig, ...] = (),
    seed: int = 0,
) -> str | None:
    """Refuse before ingest when the source's recorded releases exceed the budget or leave too
    little for this run's releases (``candidates``: the DP-SGD ones, in training mode).
    Returns the source's digest (None for a remote source), which the releases record."""
    digest = source_digest(data.source)
    first = (
        Planned(synthetic_settings_digest(data.dataset, privacy), privacy.synthetic.epsilon)
        if privacy.mode == "synthetic"
        else Planned(settings_digest(data.dataset, privacy), privacy.epsilon)
    )
    planned = [first] + [
        Planned(training_settings_digest(data.dataset, privacy, c, seed), privacy.training.epsilon)
        for c in candidates
    ]
    ledger_for(privacy, ws).check_before_reading(
        digest, data.missing, planned, privacy.budget, data.dataset.name
    )
    return digest


def record_dp_sgd(
    cfg: CandidateConfig,
    schema: DatasetSchema,
    seed: int,
    rows: int,
    where: DpSgdLedger,
    ws: Workspace,
) -> tuple[DpSgdPlan, LedgerEntry]:
    """The candidate's DP-SGD plan, recorded in the ledger as a new release before it trains:
    every training draws fresh secret noise, so it is never a reuse (Prefect's cache, which
    returns the model trained before, is). Refused, with nothing recorded, past the budget."""
    privacy, training = where.privacy, where.privacy.training
    params = cfg.model_kind.validate(cfg.params).model_dump()
    try:
        plan = plan_dp_sgd(
            rows=rows,
            batch_size=int(params["batch_size"]),
            epochs=int(params["max_epochs"]),
            epsilon=training.epsilon,
            delta=training.delta,
            max_grad_norm=training.max_grad_norm,
            accountant=training.accountant,
        )
    except ValueError as exc:
        raise ConfigError(f"candidate '{cfg.name}' ({cfg.kind}): {exc}") from exc
    entry, _, _ = ledger_for(privacy, ws).release(
        dataset=where.dataset,
        dataset_md5=where.dataset_md5,
        source_digest=where.source_digest,
        missing=where.missing,
        settings=training_settings_digest(schema, privacy, cfg, seed),
        key=uuid.uuid4().hex,  # never reused: see above
        cfg=privacy,
        what=f"train-tabular DP-SGD training of candidate '{cfg.name}' ({cfg.kind}) on "
        f"{where.dataset} ({rows:,} training rows)",
        measure=lambda: plan,
        spend=Spend(training.epsilon, training.delta, training.accountant),
    )
    return plan, entry


@task(name="preprocess-dp", cache_policy=NO_CACHE, persist_result=False)
def preprocess_private(
    train: DataRef,
    dataset_md5: str,
    source: str | None,
    privacy: PrivacyConfig,
    data: DataConfig,
    ws: Workspace,
) -> tuple[ArtifactRef, PrivacySummary, PrivateRelease]:
    """Fit the preprocessor from a DP release of the training rows: the ledger's release for
    these rows and settings, or a new one if the data set's budget allows it."""
    schema = data.dataset
    delta = privacy.training.delta
    if privacy.mode == "training" and delta * train.rows >= 1:
        # Checked here, before anything is spent; the rows are known from the split.
        raise ConfigError(
            f"privacy.training.delta = {delta:g} must be below 1/n = {1 / train.rows:.3g} for "
            f"n = {train.rows:,} training rows"
        )
    entry, summary = _release_of_rows(
        train,
        dataset_md5,
        source,
        privacy,
        data,
        ws,
        settings=settings_digest(schema, privacy),
        what=f"train-tabular preprocessing of {schema.name} ({train.rows:,} training rows)",
        measure=lambda: release_statistics(read_frame(train), schema, privacy),
    )
    assert entry.release is not None  # the key is the preprocessing release's
    ref = dump_addressed(
        private_preprocessor(schema, entry.release),
        ws.artifacts_dir / "preprocess",
        "dp-preprocessor",
    )
    statement = privacy_statement(entry.release, reused=summary.reused)
    return ref, summary.model_copy(update={"statement": statement}), entry.release


def _release_of_rows(
    train: DataRef,
    dataset_md5: str,
    source: str | None,
    privacy: PrivacyConfig,
    data: DataConfig,
    ws: Workspace,
    *,
    settings: str,
    what: str,
    measure: Callable[[], Measured],
    spend: Spend | None = None,
) -> tuple[LedgerEntry, PrivacySummary]:
    """A reusable release of the training rows (the preprocessing statistics, or a synthetic
    copy): the ledger's for these rows and settings, or a new one if the budget allows it; and
    the run's privacy summary of it, its statement for the caller to write."""
    ledger = ledger_for(privacy, ws)
    entry, reused, spent_before = ledger.release(
        dataset=data.dataset.name,
        dataset_md5=dataset_md5,
        source_digest=source,
        missing=data.missing,
        settings=settings,
        key=release_key(train.md5, settings),
        cfg=privacy,
        what=what,
        measure=measure,
        spend=spend,
    )
    spent_now = 0.0 if reused else entry.epsilon
    summary = PrivacySummary(
        mode=privacy.mode,
        accounting=entry.accounting,
        epsilon_spent=spent_now,
        release_epsilon=entry.epsilon,
        delta=entry.delta,
        budget=privacy.budget,
        budget_remaining=max(privacy.budget - spent_before - spent_now, 0.0),
        dataset_md5=dataset_md5,
        release_id=entry.release_id,
        reused=reused,
        ledger=str(ledger.path),
        statement="",
    )
    return entry, summary


@task(name="synthesize", cache_policy=NO_CACHE, persist_result=False)
def synthesize_private(
    train: DataRef,
    dataset_md5: str,
    source: str | None,
    privacy: PrivacyConfig,
    data: DataConfig,
    ws: Workspace,
) -> tuple[DataRef, PrivacySummary]:
    """The DP synthetic copy of the training rows (SmartNoise MST): the ledger's for these rows
    and settings, or a new one if the data set's budget allows it. The candidates train on it."""
    schema, synthetic = data.dataset, privacy.synthetic
    folder = ws.state_dir / "synthetic"
    real = read_frame(train)

    def measure() -> SyntheticRelease:
        folder.mkdir(parents=True, exist_ok=True)
        made = folder / f".mst-{uuid.uuid4().hex}.parquet"
        try:
            answer = synthesize(train.path, schema, synthetic, train.rows, made)
            copy = pd.read_parquet(made).astype(real.dtypes.to_dict())
        finally:
            made.unlink(missing_ok=True)
        ref = write_frame_addressed(copy[list(real.columns)], folder, "train-synthetic")
        return SyntheticRelease(
            synthesizer=f"{synthetic.synthesizer.upper()} (smartnoise-synth)",
            epsilon=synthetic.epsilon,
            delta=synthetic.delta,
            bins=synthetic.bins,
            rows=ref.rows,
            seconds=float(answer["seconds"]),
            file=str(ref.path),
            md5=ref.md5,
        )

    entry, summary = _release_of_rows(
        train,
        dataset_md5,
        source,
        privacy,
        data,
        ws,
        settings=synthetic_settings_digest(schema, privacy),
        what=f"train-tabular synthetic copy of {schema.name} ({train.rows:,} training rows)",
        measure=measure,
        spend=Spend(synthetic.epsilon, synthetic.delta, "zcdp"),
    )
    release = entry.synthetic
    assert release is not None  # the key is a synthetic release's
    path = Path(release.file)
    if not path.is_file() or file_digest(path) != release.md5:
        raise PrivacyLedgerError(
            f"the synthetic copy of release {entry.release_id} ({path}) is missing or changed; "
            "restore it, or set privacy.release=<new label> to make (and spend ε on) a new one"
        )
    copy = DataRef(path=path, md5=release.md5, rows=release.rows)
    return copy, summary.model_copy(
        update={
            "statement": synthetic_statement(release, reused=summary.reused),
            "synthetic_report": marginal_report(real, read_frame(copy), schema, release.bins),
        }
    )


def privacy_off(privacy: PrivacyConfig, dataset_md5: str, ws: Workspace) -> PrivacySummary:
    ledger = ledger_for(privacy, ws)
    spent = ledger.spent(dataset_md5) if ledger.path.exists() else 0.0
    return PrivacySummary(
        mode="off",
        accounting=privacy.accounting,
        epsilon_spent=0.0,
        release_epsilon=0.0,
        delta=0.0,
        budget=privacy.budget,
        budget_remaining=max(privacy.budget - spent, 0.0),
        dataset_md5=dataset_md5,
        release_id=None,
        reused=False,
        ledger=str(ledger.path),
        statement=privacy_statement(None),
    )
