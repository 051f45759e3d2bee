"""The promotion rule, case by case."""

from __future__ import annotations

import pytest

from trustflow.promotion import Comparison, decide


def _on(challenger: float, champion: float | None) -> Comparison:
    return Comparison(challenger=challenger, champion=champion, rows=500, md5="m", basis="rows")


CASES = [
    # (case, champion, comparison, metric, min_improvement, promote, reason starts with)
    ("no champion", None, None, "roc_auc", 0.0, True, "first champion"),
    ("same version", "2", None, "roc_auc", 0.0, False, "version 2 is already champion"),
    ("better", "1", _on(0.93, 0.92), "roc_auc", 0.0, True, "roc_auc 0.9300 beats v1's 0.9200"),
    ("worse", "1", _on(0.91, 0.92), "roc_auc", 0.0, False, "roc_auc 0.9100 does not beat"),
    ("equal", "1", _on(0.92, 0.92), "roc_auc", 0.0, False, "roc_auc 0.9200 does not beat"),
    ("within min_improvement", "1", _on(0.925, 0.92), "roc_auc", 0.01, False, "roc_auc 0.9250"),
    ("past min_improvement", "1", _on(0.935, 0.92), "roc_auc", 0.01, True, "roc_auc 0.9350 beats"),
    ("champion unscorable", "1", _on(0.90, None), "roc_auc", 0.0, True,
     "champion v1 has no comparable roc_auc"),
    ("lower loss is better", "1", _on(0.30, 0.32), "log_loss", 0.0, True, "log_loss 0.3000 beats"),
    ("higher loss is worse", "1", _on(0.33, 0.32), "log_loss", 0.0, False,
     "log_loss 0.3300 does not beat"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("champion", "comparison", "metric", "min_improvement", "promote", "reason"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_the_rule(champion, comparison, metric, min_improvement, promote, reason) -> None:
    decision = decide("2", champion, comparison, metric, min_improvement, "champion")
    assert decision.promote is promote
    assert decision.reason.startswith(reason), decision.reason
    if comparison is not None and comparison.champion is not None:
        assert decision.reason.endswith(("on rows", "stays on v1"))


def test_another_champion_needs_a_comparison() -> None:
    with pytest.raises(ValueError, match="a comparison is required"):
        decide("2", "1", None, "roc_auc", 0.0, "champion")
