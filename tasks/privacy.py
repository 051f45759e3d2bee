"""Privacy tasks: the budget check before any row is read, and the differentially private
preprocessing release recorded in (or reused from) the ledger. Never cached by Prefect: the
ledger is the cache, and it changes between runs."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from trustflow.config import DataConfig, PrivacyConfig
from trustflow.data.sources import source_digest
from trustflow.io import dump_addressed, read_frame
from trustflow.privacy.ledger import PrivacyLedger, release_key, settings_digest
from trustflow.privacy.mechanisms import (
    PrivateRelease,
    privacy_statement,
    private_preprocessor,
    release_statistics,
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


def ledger_for(cfg: PrivacyConfig, ws: Workspace) -> PrivacyLedger:
    return PrivacyLedger(Path(cfg.ledger) if cfg.ledger else ws.state_dir / "privacy-ledger.json")


@task(name="privacy-budget", cache_policy=NO_CACHE, persist_result=False)
def check_budget(privacy: PrivacyConfig, data: DataConfig, ws: Workspace) -> str | None:
    """Refuse before ingest when the source's recorded releases leave too little budget.
    Returns the source's digest (None for a remote source), which the release records."""
    digest = source_digest(data.source)
    ledger_for(privacy, ws).check_before_reading(
        digest, data.missing, settings_digest(data.dataset, privacy), privacy, data.dataset.name
    )
    return digest


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
    ledger = ledger_for(privacy, ws)
    settings = settings_digest(schema, privacy)
    entry, reused, spent_before = ledger.release(
        dataset=schema.name,
        dataset_md5=dataset_md5,
        source_digest=source,
        missing=data.missing,
        settings=settings,
        key=release_key(train.md5, settings),
        cfg=privacy,
        what=f"train-tabular preprocessing of {schema.name} ({train.rows:,} training rows)",
        measure=lambda: release_statistics(read_frame(train), schema, privacy),
    )
    spent_now = 0.0 if reused else entry.epsilon
    total = spent_before + spent_now
    ref = dump_addressed(
        private_preprocessor(schema, entry.release),
        ws.artifacts_dir / "preprocess",
        "dp-preprocessor",
    )
    summary = PrivacySummary(
        mode=privacy.mode,
        accounting=privacy.accounting,
        epsilon_spent=spent_now,
        release_epsilon=entry.epsilon,
        delta=entry.delta,
        budget=privacy.budget,
        budget_remaining=max(privacy.budget - total, 0.0),
        dataset_md5=dataset_md5,
        release_id=entry.release_id,
        reused=reused,
        ledger=str(ledger.path),
        statement=privacy_statement(entry.release, reused=reused),
    )
    return ref, summary, entry.release


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
