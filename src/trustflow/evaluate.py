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
    roc_auc_score,
    roc_curve,
)
from sklearn.pipeline import Pipeline


class Metrics(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    roc_auc: float
    accuracy: float
    f1: float
    log_loss: float


class Evaluation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    metrics: Metrics
    fpr: list[float]
    tpr: list[float]
    confusion: list[list[int]]  # [[tn, fp], [fn, tp]]


def evaluate_model(model: Pipeline, features: pd.DataFrame, target: np.ndarray) -> Evaluation:
    proba = model.predict_proba(features)[:, 1]
    # The model's own labels: for a randomised classifier (a fairness post-processing) they are
    # not a threshold on ``proba``.
    labels = np.asarray(model.predict(features), dtype=np.int64)
    fpr, tpr, _ = roc_curve(target, proba)
    metrics = Metrics(
        roc_auc=float(roc_auc_score(target, proba)),
        accuracy=float(accuracy_score(target, labels)),
        f1=float(f1_score(target, labels)),
        log_loss=float(log_loss(target, proba, labels=[0, 1])),
    )
    return Evaluation(
        metrics=metrics,
        fpr=fpr.tolist(),
        tpr=tpr.tolist(),
        confusion=confusion_matrix(target, labels, labels=[0, 1]).tolist(),
    )


def roc_figure(evaluation: Evaluation, title: str) -> Figure:
    fig = Figure(figsize=(4.5, 4.5), dpi=100)
    ax = fig.add_subplot()
    ax.plot(evaluation.fpr, evaluation.tpr, label=f"AUC = {evaluation.metrics.roc_auc:.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def confusion_figure(evaluation: Evaluation, title: str, labels: tuple[str, str]) -> Figure:
    matrix = np.array(evaluation.confusion)
    fig = Figure(figsize=(4.5, 4), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        ax.text(j, i, f"{count:,}", ha="center", va="center", color=colour)
    ax.set_xticks([0, 1], labels=list(labels))
    ax.set_yticks([0, 1], labels=list(labels))
    ax.set(xlabel="Predicted", ylabel="Actual", title=title)
    fig.tight_layout()
    return fig
