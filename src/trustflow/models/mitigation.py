"""Fairness mitigation: Fairlearn's ThresholdOptimizer over an already-trained candidate.

It picks, per group of one sensitive feature, the decision thresholds on the base model's
probability that equalise the chosen constraint (equalized odds by default) while keeping the
objective as high as possible. It is fitted on the validation split, never on the test split the
audit reads.

Two properties decide how it may be used, and the report states them:

- it reads the sensitive feature at scoring time (here from the feature columns themselves), and
- for rows between a group's two thresholds it draws the label at random with a fitted
  probability; ``predict`` is reproducible only because its random state is fixed.

ONNX has no equivalent of that randomised choice, so a mitigated candidate is audited and tracked
like any other but cannot be exported, and therefore can never be deployed or become champion.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.pipeline import Pipeline

from trustflow.config import CandidateConfig
from trustflow.errors import ConfigError

NOT_EXPORTABLE = (
    "Fairlearn's ThresholdOptimizer cannot be exported to ONNX: it draws each label at random "
    "between two per-group thresholds and reads the sensitive feature at scoring time, so this "
    "candidate cannot be deployed"
)


class FairThresholdClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A fitted base pipeline post-processed by ``fairlearn.postprocessing.ThresholdOptimizer``;
    the sensitive feature is taken from the feature column of the same name."""

    onnx_unsupported_reason = NOT_EXPORTABLE

    def __init__(
        self,
        base: Pipeline,
        sensitive_feature: str,
        constraints: str = "equalized_odds",
        objective: str = "accuracy_score",
        seed: int = 0,
    ) -> None:
        self.base = base
        self.sensitive_feature = sensitive_feature
        self.constraints = constraints
        self.objective = objective
        self.seed = seed

    def fit(self, features: pd.DataFrame, target: np.ndarray) -> FairThresholdClassifier:
        from fairlearn.postprocessing import ThresholdOptimizer

        optimizer = ThresholdOptimizer(
            estimator=self.base,
            constraints=self.constraints,
            objective=self.objective,
            prefit=True,
            predict_method="predict_proba",
        ).fit(features, target, sensitive_features=features[self.sensitive_feature])
        # Only the fitted thresholder scores; the optimizer's search curves (pandas objects) are
        # dropped so the model stays small and serialisable with skops.
        self.thresholder_ = optimizer.interpolated_thresholder_
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        """The probability of each label under the randomised decision (0, 1, or the mixing
        probability between a group's two thresholds)."""
        # _pmf_predict is the distribution predict() samples from; fairlearn has no public name
        # for it (the version is pinned in constraints.txt).
        pmf: np.ndarray = self.thresholder_._pmf_predict(
            features, sensitive_features=features[self.sensitive_feature]
        )
        return pmf

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        labels = self.thresholder_.predict(
            features, sensitive_features=features[self.sensitive_feature], random_state=self.seed
        )
        return np.asarray(labels, dtype=np.int64)


def mitigate_candidate(
    base: Pipeline,
    features: pd.DataFrame,
    target: np.ndarray,
    cfg: CandidateConfig,
    seed: int,
) -> FairThresholdClassifier:
    """Fit the post-processing of ``base`` on held-out rows (the validation split)."""
    options: dict[str, Any] = {k: v for k, v in cfg.params.items() if k != "base"}
    try:
        estimator = FairThresholdClassifier(base=base, seed=seed, **options)
    except TypeError as exc:  # an unknown keyword
        raise ConfigError(f"candidate '{cfg.name}' ({cfg.kind}): {exc}") from exc
    # Fairlearn's ValueError here is about the rows (a group with one class only): the
    # candidate fails, and the flow goes on without it.
    return estimator.fit(features, target)
