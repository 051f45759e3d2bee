"""Promotion: the champion and the challenger compared on rows the champion never saw,
the pure rule (trustflow.promotion) applied, and the alias moved by compare-and-set."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from tasks.tracking.log import SEEN_ROWS_ARTIFACT
from tasks.tracking.registry import current_alias
from tasks.tracking.tags import ANNOUNCED_TAG
from trustflow.announce import EVENT, announce_champion
from trustflow.config import (
    DatasetSchema,
    RegistryConfig,
)
from trustflow.data.fingerprint import rows_digest, unseen
from trustflow.errors import AnnounceError, PromotionConflict
from trustflow.evaluate import evaluate_model
from trustflow.failpoints import failpoint
from trustflow.io import load_artifact, read_frame
from trustflow.models.preprocess import features_and_target
from trustflow.promotion import Comparison, decide
from trustflow.refs import ArtifactRef, DataRef


class Promotion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    new_version: bool  # False when an identical model was registered before
    promoted: bool  # the alias points at ``version`` after this run
    alias: str
    previous_champion: str | None
    challenger_score: float
    champion_score: float | None
    # What the two were compared on: test rows the champion never trained on (how many, and the
    # md5 of their fingerprints), or their recorded held-out scores; None without a comparison.
    comparison_rows: int | None = None
    comparison_md5: str | None = None
    comparison: str | None = None
    reason: str


# Fewer test rows than this that the champion never trained on (after a large data change, say)
# make a comparison too noisy: the recorded held-out scores are compared instead.
MIN_COMPARISON_ROWS = 100


def _seen_by(version: Any) -> np.ndarray | None:
    """The training-row fingerprints of a registered version's run; None for a version whose
    run did not record them (registry errors propagate)."""
    run_id = version.tags.get("trustflow.run_id")
    if run_id is None:
        return None
    client = MlflowClient()
    folder = str(Path(SEEN_ROWS_ARTIFACT).parent)
    if SEEN_ROWS_ARTIFACT not in {a.path for a in client.list_artifacts(run_id, folder)}:
        return None
    with tempfile.TemporaryDirectory(prefix="trustflow-rows-") as tmp:
        return np.asarray(np.load(client.download_artifacts(run_id, SEEN_ROWS_ARTIFACT, tmp)))


Scorer = Callable[[Any, pd.DataFrame], float]


def compare_with_champion(
    champion: Any,
    registry: RegistryConfig,
    test: pd.DataFrame,
    target: str,
    challenger: Any,
    held_out: float,
    score: Scorer,
) -> Comparison:
    """Score ``challenger`` and the registered version ``champion`` on the rows of ``test`` that
    the champion never trained on. When too few are left (or the champion did not record its
    rows), compare their held-out scores as recorded."""
    label = f"v{champion.version}"
    recorded = champion.tags.get(f"trustflow.metric.{registry.metric}")

    def as_recorded(why: str) -> Comparison:
        value = float(recorded) if recorded is not None else None
        basis = f"held-out scores as recorded ({why})"
        return Comparison(challenger=held_out, champion=value, rows=None, md5=None, basis=basis)

    seen = _seen_by(champion)
    if seen is None:
        return as_recorded(f"{label} has no record of its training rows")
    fresh = test[unseen(test, seen)].reset_index(drop=True)
    if len(fresh) < MIN_COMPARISON_ROWS or fresh[target].nunique() < 2:
        return as_recorded(f"only {len(fresh)} test rows are new to {label}")
    model = mlflow.sklearn.load_model(f"models:/{registry.model_name}/{champion.version}")
    try:
        champion_score = score(model, fresh)
    except (KeyError, ValueError) as exc:  # another schema: the champion cannot read these rows
        return as_recorded(f"{label} cannot score this data: {exc}")
    return Comparison(
        challenger=score(challenger, fresh),
        champion=champion_score,
        rows=len(fresh),
        md5=rows_digest(fresh),
        basis=f"{len(fresh):,} test rows {label} never trained on",
    )


def tabular_score(schema: DatasetSchema, metric: str) -> Scorer:
    """A tabular model's ``metric`` on a frame of the schema's rows."""

    def score(model: Any, frame: pd.DataFrame) -> float:
        features, target = features_and_target(frame, schema)
        return float(
            getattr(evaluate_model(model, features, target, schema.target_labels).metrics, metric)
        )

    return score


@task(name="promote", cache_policy=NO_CACHE, persist_result=False)
def promote(
    version: str,
    new_version: bool,
    model: ArtifactRef,
    held_out: float,
    registry: RegistryConfig,
    test: DataRef,
    target: str,
    score: Scorer,
) -> Promotion:
    """Move the alias to ``version`` (the registered ``model``, whose held-out score is
    ``held_out``) only if it beats the champion on the configured metric, both scored by
    ``score`` on test rows the champion never trained on."""
    return decide_promotion(
        version,
        new_version,
        held_out,
        registry,
        lambda champion: compare_with_champion(
            champion,
            registry,
            read_frame(test),
            target,
            load_artifact(model),
            held_out,
            score,
        ),
    )


PROMOTION_ATTEMPTS = 3  # decisions against a champion that keeps moving, before giving up


def decide_promotion(
    version: str,
    new_version: bool,
    held_out: float,
    registry: RegistryConfig,
    compare: Callable[[Any], Comparison],
) -> Promotion:
    """Decide with :func:`trustflow.promotion.decide` against the current champion
    (``compare(champion)`` scores the two) and move the alias when it says so.

    Compare-and-set: just before the alias moves, it is read again. If another run moved it
    after this one decided, this run decides again against the new champion; it never
    overwrites a champion it did not compare with. Registry errors propagate: a failed read
    never passes for "no champion yet"."""
    client = MlflowClient()
    name, alias = registry.model_name, registry.alias
    for _ in range(PROMOTION_ATTEMPTS):
        champion = current_alias(name, alias)
        previous = str(champion.version) if champion is not None else None
        comparison = compare(champion) if previous not in (None, version) else None
        decision = decide(
            version, previous, comparison, registry.metric, registry.min_improvement, alias
        )
        if decision.promote:
            now = current_alias(name, alias)
            if (str(now.version) if now is not None else None) != previous:
                continue  # moved by another run since it was read: decide again
            client.set_registered_model_alias(name, alias, version)
            failpoint("promote.moved")
        return Promotion(
            name=name,
            version=version,
            new_version=new_version,
            promoted=decision.promote or previous == version,
            alias=alias,
            previous_champion=previous,
            challenger_score=comparison.challenger if comparison else held_out,
            champion_score=comparison.champion if comparison else None,
            comparison_rows=comparison.rows if comparison else None,
            comparison_md5=comparison.md5 if comparison else None,
            comparison=comparison.basis if comparison else None,
            reason=decision.reason,
        )
    raise PromotionConflict(
        f"{name}@{alias} was moved by other runs {PROMOTION_ATTEMPTS} times while this run "
        f"decided on v{version}; it was left where they put it"
    )


def record_outcome(run_id: str, promotion: Promotion) -> None:
    client = MlflowClient()
    client.set_tag(run_id, "trustflow.model.version", promotion.version)
    client.set_tag(run_id, "trustflow.model.promoted", str(promotion.promoted).lower())
    client.set_tag(run_id, "trustflow.model.reason", promotion.reason)
    if promotion.comparison is not None:
        client.set_tag(run_id, "trustflow.comparison", promotion.comparison)
        client.set_tag(run_id, "trustflow.comparison.rows", str(promotion.comparison_rows))
        client.set_tag(run_id, "trustflow.comparison.md5", str(promotion.comparison_md5))
    client.set_tag(
        run_id,
        "mlflow.note.content",
        f"Registered {promotion.name} v{promotion.version}: {promotion.reason}",
    )
    client.log_dict(run_id, promotion.model_dump(mode="json"), "promotion.json")


class Announcement(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sent: bool
    detail: str


def changed(promotion: Promotion) -> bool:
    """The alias moved to another version in this run (not kept, not re-pointed at itself)."""
    return promotion.promoted and promotion.previous_champion != promotion.version


@task(name="announce", cache_policy=NO_CACHE, persist_result=False)
def announce(promotion: Promotion, repository: str, run_id: str) -> Announcement:
    """The champion-changed dispatch to ``repository``, recorded on the run. A failure does not
    fail the run (the alias has moved, which is what counts); it says how to release by hand."""
    model = f"models:/{promotion.name}/{promotion.version}"
    try:
        announce_champion(repository, model, os.environ)
        done = Announcement(sent=True, detail=f"{EVENT} ({model}) sent to {repository}")
    except AnnounceError as exc:
        hint = f"dispatch {repository}'s release workflow by hand with {model}"
        done = Announcement(sent=False, detail=f"not sent: {exc}; {hint}")
    MlflowClient().set_tag(run_id, ANNOUNCED_TAG, done.detail)
    return done
