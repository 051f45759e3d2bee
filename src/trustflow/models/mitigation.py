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

FOLDED = "(small groups)"  # the group small groups are folded into
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
        small_groups: str = "fold",
        min_group_rows: int = 30,
    ) -> None:
        self.base = base
        self.sensitive_feature = sensitive_feature
        self.constraints = constraints
        self.objective = objective
        self.seed = seed
        self.small_groups = small_groups
        self.min_group_rows = min_group_rows

    def _groups(self, features: pd.DataFrame) -> pd.Series:
        """Each row's group: its sensitive value, or FOLDED for a group too small to fit."""
        values = features[self.sensitive_feature].astype("string").fillna("(missing)")
        return values.where(values.isin(self.groups_), FOLDED).astype(object)

    def _choose_groups(self, features: pd.DataFrame, target: np.ndarray) -> None:
        values = features[self.sensitive_feature].astype("string").fillna("(missing)")
        table = pd.crosstab(values, target).reindex(columns=[0, 1], fill_value=0)
        small = table[(table.sum(axis=1) < self.min_group_rows) | (table == 0).any(axis=1)]
        described = ", ".join(
            f"{group} {int(row.sum())}" for group, row in small.head(5).iterrows()
        )
        where = (
            f"{self.sensitive_feature} group(s) with fewer than {self.min_group_rows} validation "
            f"rows or one class only ({described})"
        )
        if len(small) and self.small_groups == "fail":
            raise ValueError(f"{where}; params.small_groups=fold folds them into one group")
        self.groups_ = [str(group) for group in table.index if group not in small.index]
        folded = table.loc[small.index].sum()
        if len(small) and (folded == 0).any():
            raise ValueError(f"{where} hold one class only even when folded together")
        if len(self.groups_) + (1 if len(small) else 0) < 2:
            raise ValueError(f"{where} leave no two groups to equalise")

    def fit(self, features: pd.DataFrame, target: np.ndarray) -> FairThresholdClassifier:
        from fairlearn.postprocessing import ThresholdOptimizer

        optimizer = ThresholdOptimizer(
            estimator=self.base,
            constraints=self.constraints,
            objective=self.objective,
            prefit=True,
            predict_method="predict_proba",
        )
        self._choose_groups(features, target)
        optimizer.fit(features, target, sensitive_features=self._groups(features))
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
            features, sensitive_features=self._groups(features)
        )
        return pmf

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        labels = self.thresholder_.predict(
            features, sensitive_features=self._groups(features), random_state=self.seed
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
