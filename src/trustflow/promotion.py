"""The promotion rule: whether a registered version takes the serving alias from the champion.

Pure: the tracking layer reads the registry and scores both models, this module decides, and the
tracking layer moves the alias (re-reading it first: see tasks/tracking.py).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from trustflow.config import Metric, lower_is_better


class Comparison(BaseModel):
    """The challenger and the champion scored on the same rows, neither trained on them (or,
    failing that, their held-out scores as recorded)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    challenger: float
    champion: float | None  # None: the champion has no comparable score
    rows: int | None  # None when recorded held-out scores were compared instead
    md5: str | None  # of the comparison rows' fingerprints
    basis: str


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    promote: bool  # move the alias to the challenger
    reason: str


def decide(
    version: str,
    champion: str | None,
    comparison: Comparison | None,
    metric: Metric,
    min_improvement: float,
    alias: str,
) -> Decision:
    """``version`` takes ``alias`` when there is no champion, when the champion has no comparable
    score, or when it beats the champion by more than ``min_improvement`` on ``metric`` (lower
    is better for a loss). ``comparison`` is required whenever there is another champion."""
    if champion is None:
        return Decision(promote=True, reason=f"first {alias}")
    if champion == version:
        return Decision(promote=False, reason=f"version {version} is already {alias}")
    if comparison is None:
        raise ValueError(f"v{version} against v{champion}: a comparison is required")
    if comparison.champion is None:
        return Decision(promote=True, reason=f"{alias} v{champion} has no comparable {metric}")
    score, best = comparison.challenger, comparison.champion
    gain = best - score if lower_is_better(metric) else score - best
    # The gain itself, since two scores can differ below the fourth decimal.
    versus = f"v{champion}'s {best:.4f} ({gain:+.2g}) on {comparison.basis}"
    if gain > min_improvement:
        return Decision(promote=True, reason=f"{metric} {score:.4f} beats {versus}")
    return Decision(
        promote=False,
        reason=f"{metric} {score:.4f} does not beat {versus}; {alias} stays on v{champion}",
    )
