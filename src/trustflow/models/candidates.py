"""Candidate classifiers. Each trained candidate is a whole Pipeline (preprocess + model), so it
scores the records a client sends and converts to ONNX as one graph.

The Explainable Boosting Machine is the exception to the shared preprocessing: a glass box is only
readable on the features people know, so it takes the raw columns (it bins numbers and encodes
categories itself) and its pipeline is the model alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from trustflow.config import CandidateConfig
from trustflow.errors import ConfigError
from trustflow.models.keras_net import KerasClassifier
from trustflow.models.kinds import Task
from trustflow.models.neural import (
    Accelerator,
    NetworkClassifier,
    NeuralClassifier,
    NeuralRegressor,
    WarmStart,
)
from trustflow.privacy.dpsgd import DpSgdPlan


def make_estimator(cfg: CandidateConfig, seed: int, task: Task = "binary") -> Any:
    """The kind's estimator for ``task``, unfitted, from its validated params."""
    kind = cfg.model_kind
    if kind.build is None:
        route = "post-processes another candidate" if kind.mitigation else "trains as a network"
        raise ConfigError(f"candidate '{cfg.name}' ({cfg.kind}) {route}: it has no estimator")
    try:
        return kind.build(kind.validate(cfg.params), seed, task)
    except TypeError as exc:  # a param the installed library does not take
        raise ConfigError(f"candidate '{cfg.name}' ({cfg.kind}): {exc}") from exc


def train_candidate(
    preprocessor: ColumnTransformer,
    features: pd.DataFrame,
    target: np.ndarray,
    cfg: CandidateConfig,
    seed: int,
    task: Task = "binary",
) -> Pipeline:
    """Fit the model on the already-fitted preprocessor's output and join the two (a
    raw-feature kind's pipeline is the model alone)."""
    estimator = make_estimator(cfg, seed, task)
    raw_features = cfg.model_kind.raw_features
    try:
        with warnings.catch_warnings():
            # A multiclass EBM keeps its pair terms but InterpretML cannot show them: its
            # explanation lists the single features (the model card says which method).
            warnings.filterwarnings("ignore", "For multiclass we cannot currently visualize")
            estimator.fit(features if raw_features else preprocessor.transform(features), target)
    except ValueError as exc:  # sklearn rejects invalid hyper-parameter values at fit time
        raise ConfigError(f"candidate '{cfg.name}' ({cfg.kind}): {exc}") from exc
    if raw_features:
        return Pipeline([("model", estimator)])
    return Pipeline([("preprocess", preprocessor), ("model", estimator)])


def preprocessor_numeric_columns(preprocessor: ColumnTransformer) -> int:
    """How many leading columns of the shared preprocessing's output are numbers."""
    return len(next(cols for name, _, cols in preprocessor.transformers if name == "numeric"))


def train_network(
    preprocessor: ColumnTransformer,
    train: tuple[pd.DataFrame, np.ndarray],
    valid: tuple[pd.DataFrame, np.ndarray],
    cfg: CandidateConfig,
    seed: int,
    accelerator: Accelerator,
    loggers: Sequence[Any] = (),
    warm: WarmStart | None = None,
    task: Task = "binary",
    dp: DpSgdPlan | None = None,
) -> Pipeline:
    """A network (Lightning or Keras) on the shared preprocessing, early-stopped on ``valid``;
    a Lightning one regresses when ``task`` is regression, and trains by DP-SGD with ``dp``."""
    network: NetworkClassifier
    kind = cfg.model_kind
    if dp is not None and kind.dp_sgd == "never":
        raise ConfigError(f"candidate '{cfg.name}' ({cfg.kind}) cannot train with DP-SGD")
    if kind.framework == "keras":
        network = KerasClassifier("mlp", cfg.params, seed, accelerator)
    else:
        params = dict(cfg.params)
        if kind.architecture == "mlp":
            params.setdefault("numeric", preprocessor_numeric_columns(preprocessor))
        learner = NeuralRegressor if task == "regression" else NeuralClassifier
        network = learner(kind.architecture, params, seed, accelerator)
    fit_dp: dict[str, Any] = {"dp": dp} if dp is not None else {}  # Keras takes none
    try:
        network.fit(
            preprocessor.transform(train[0]),
            train[1],
            valid=(preprocessor.transform(valid[0]), valid[1]),
            loggers=loggers,
            warm=warm,
            **fit_dp,
        )
    except ConfigError as exc:
        raise ConfigError(f"candidate '{cfg.name}' ({cfg.kind}): {exc}") from exc
    return Pipeline([("preprocess", preprocessor), ("model", network)])
