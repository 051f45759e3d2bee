"""Evaluation on the held-out test split: metrics and the figures that go with them."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
    roc_curve,
)
from sklearn.pipeline import Pipeline


class Metrics(BaseModel):
    """Binary: ROC AUC and F1 of the positive class. Multiclass: ROC AUC one-vs-rest and F1,
    both macro-averaged over the classes, and F1 weighted by class size as well. Regression:
    RMSE, MAE and R²; the classification metrics are None."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    roc_auc: float | None = None
    accuracy: float | None = None
    f1: float | None = None
    log_loss: float | None = None
    f1_weighted: float | None = None  # multiclass only
    rmse: float | None = None
    mae: float | None = None
    r2: float | None = None

    def values(self) -> dict[str, float]:
        """The metrics this task has, by name (what is tracked and reported)."""
        return {name: value for name, value in self.model_dump().items() if value is not None}


class RocCurve(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str  # the class scored against the rest (binary: the positive class)
    auc: float
    fpr: list[float]
    tpr: list[float]


class Evaluation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    metrics: Metrics
    curves: list[RocCurve]  # binary: one; multiclass: one per class, against the rest
    confusion: list[list[int]]  # actual (rows) by predicted (columns), in label order
    # Regression: (actual, predicted) on at most 2,000 test rows, for the figure.
    points: list[tuple[float, float]] = []


def evaluate_model(
    model: Pipeline, features: pd.DataFrame, target: np.ndarray, labels: tuple[str, ...]
) -> Evaluation:
    """``target`` is encoded 0, 1, ... in the order of ``labels``; no labels: a number to
    regress on."""
    if not labels:
        return _evaluate_regressor(model, features, target)
    proba = np.asarray(model.predict_proba(features), dtype=np.float64)
    # The model's own labels: for a randomised classifier (a fairness post-processing) they are
    # not the most probable class.
    predicted = np.asarray(model.predict(features), dtype=np.int64)
    codes = list(range(len(labels)))
    binary = len(labels) == 2
    scored = [1] if binary else codes
    curves = []
    for code in scored:
        fpr, tpr, _ = roc_curve(target == code, proba[:, code])
        auc = float(roc_auc_score(target == code, proba[:, code]))
        curves.append(RocCurve(label=labels[code], auc=auc, fpr=fpr.tolist(), tpr=tpr.tolist()))
    metrics = Metrics(
        roc_auc=curves[0].auc
        if binary
        else float(roc_auc_score(target, proba, multi_class="ovr", average="macro", labels=codes)),
        accuracy=float(accuracy_score(target, predicted)),
        f1=float(f1_score(target, predicted, average="binary" if binary else "macro")),
        log_loss=float(log_loss(target, proba, labels=codes)),
        f1_weighted=None
        if binary
        else float(f1_score(target, predicted, average="weighted", labels=codes)),
    )
    return Evaluation(
        metrics=metrics,
        curves=curves,
        confusion=confusion_matrix(target, predicted, labels=codes).tolist(),
    )


def _evaluate_regressor(model: Pipeline, features: pd.DataFrame, target: np.ndarray) -> Evaluation:
    predicted = np.asarray(model.predict(features), dtype=np.float64).reshape(-1)
    shown = np.random.default_rng(0).permutation(len(target))[:2000]
    return Evaluation(
        metrics=Metrics(
            rmse=float(np.sqrt(mean_squared_error(target, predicted))),
            mae=float(mean_absolute_error(target, predicted)),
            r2=float(r2_score(target, predicted)),
        ),
        curves=[],
        confusion=[],
        points=[(float(target[i]), float(predicted[i])) for i in sorted(shown)],
    )


def fit_figure(evaluation: Evaluation, title: str) -> Figure:
    """A regressor's predictions against the actual values (the diagonal is a perfect fit)."""
    actual, predicted = np.array(evaluation.points).T
    fig = Figure(figsize=(4.5, 4.5), dpi=100)
    ax = fig.add_subplot()
    ax.scatter(actual, predicted, s=8, alpha=0.6)
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    ax.plot([low, high], [low, high], linestyle="--", color="grey", linewidth=0.8)
    r2 = evaluation.metrics.r2 or 0.0
    ax.set(xlabel="Actual", ylabel="Predicted", title=f"{title} (R² = {r2:.3f})")
    fig.tight_layout()
    return fig


def residual_figure(evaluation: Evaluation, title: str) -> Figure:
    actual, predicted = np.array(evaluation.points).T
    fig = Figure(figsize=(4.5, 4), dpi=100)
    ax = fig.add_subplot()
    ax.hist(predicted - actual, bins=30, color="C0")
    ax.axvline(0, linestyle="--", color="grey", linewidth=0.8)
    ax.set(xlabel="Predicted − actual", ylabel="Rows", title=title)
    fig.tight_layout()
    return fig


def roc_figure(evaluation: Evaluation, title: str) -> Figure:
    fig = Figure(figsize=(4.5, 4.5), dpi=100)
    ax = fig.add_subplot()
    several = len(evaluation.curves) > 1
    for curve in evaluation.curves:
        name = f"{curve.label} vs rest: " if several else ""
        ax.plot(curve.fpr, curve.tpr, label=f"{name}AUC = {curve.auc:.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def confusion_figure(evaluation: Evaluation, title: str, labels: tuple[str, ...]) -> Figure:
    matrix = np.array(evaluation.confusion)
    fig = Figure(figsize=(4.5, 4), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        ax.text(j, i, f"{count:,}", ha="center", va="center", color=colour)
    ticks = list(range(len(labels)))
    ax.set_xticks(ticks, labels=list(labels))
    ax.set_yticks(ticks, labels=list(labels))
    ax.set(xlabel="Predicted", ylabel="Actual", title=title)
    fig.tight_layout()
    return fig
