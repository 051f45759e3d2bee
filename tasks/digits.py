"""Tasks of train-digits: the bundled digits as a versioned table, the CNN, its evaluation, its
ONNX form with the allclose parity gate, and its MLflow run, registration and promotion."""

from __future__ import annotations

import json
import time
from typing import Any, Literal

import numpy as np
import onnx
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict
from sklearn.metrics import accuracy_score, f1_score, log_loss
from sklearn.pipeline import Pipeline

from tasks.caching import CONTENT_CACHE
from tasks.tracking.champion import Scorer
from tasks.train import tensorboard_loggers
from trustflow.config import TrainerConfig
from trustflow.data.digits import CLASSES, PIXELS, TARGET, digits_frame, features
from trustflow.export.metadata import METADATA_CLASSES, METADATA_DATASET, METADATA_TARGET
from trustflow.export.neural import (
    allclose_parity,
    concat_front,
    join,
    keras_graph,
    network_graph,
)
from trustflow.io import dump_addressed, load_artifact, read_frame, write_addressed, write_frame
from trustflow.models.keras_net import KerasClassifier, Transfer
from trustflow.models.neural import NetworkClassifier, NeuralClassifier, WarmStart
from trustflow.refs import ArtifactRef, DataRef
from trustflow.workspace import Workspace


class TrainedNetwork(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ArtifactRef  # a Pipeline whose one step is the NeuralClassifier (or KerasClassifier)
    fit_seconds: float
    epoch_seconds: tuple[float, ...] = ()  # kept out of the model file (see NeuralClassifier)


class NetworkExport(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    onnx: ArtifactRef
    parity: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.parity["passed"])

    def reason(self) -> str:
        p = self.parity
        verdict = "passed" if self.passed else "failed"
        return (
            f"ONNX parity {verdict}: max |diff| {p['max_abs_diff']:.2e} over {p['rows']} rows "
            f"(allclose rtol {p['rtol']:g}, atol {p['atol']:g}), labels "
            f"{p['label_agreement']:.2%} equal"
        )


@task(name="ingest", cache_policy=NO_CACHE, persist_result=False)
def ingest_digits(classes: list[int] | None, ws: Workspace) -> DataRef:
    """scikit-learn's bundled digits (only ``classes``, when given), as data/digits.parquet (no
    download)."""
    frame = digits_frame()
    if classes is not None:
        frame = frame[frame[TARGET].isin(classes)].reset_index(drop=True)
    return write_frame(frame, ws.data_dir / "digits.parquet")


@task(name="train", cache_policy=CONTENT_CACHE, persist_result=True)
def train_digits(
    train: DataRef,
    valid: DataRef,
    params: dict[str, Any],
    seed: int,
    trainer: TrainerConfig,
    warm: WarmStart | None,
    ws: Workspace,
    framework: Literal["lightning", "keras"],
    label_fraction: float,
    transfer: Transfer | None,
) -> TrainedNetwork:
    """``label_fraction``: train on that share of the training images (drawn with ``seed``), as
    when labels are scarce; ``transfer``: start from another task's Keras network."""
    frame = read_frame(train)
    if label_fraction < 1:
        frame = frame.sample(frac=label_fraction, random_state=seed)
    x, y = features(frame)
    started = time.perf_counter()
    loggers = tensorboard_loggers(trainer, ws, "digits-cnn", train)
    valid_set = features(read_frame(valid))
    network: NetworkClassifier
    if framework == "keras":
        network = KerasClassifier("cnn", params, seed, trainer.accelerator, len(CLASSES)).fit(
            x, y, valid=valid_set, loggers=loggers, warm=warm, transfer=transfer
        )
    else:
        network = NeuralClassifier("cnn", params, seed, trainer.accelerator, len(CLASSES)).fit(
            x, y, valid=valid_set, loggers=loggers, warm=warm
        )
    seconds = time.perf_counter() - started
    model = dump_addressed(Pipeline([("model", network)]), ws.artifacts_dir / "models", "digits")
    return TrainedNetwork(
        model=model, fit_seconds=round(seconds, 3), epoch_seconds=tuple(network.epoch_seconds())
    )


def _metrics(model: Pipeline, frame: pd.DataFrame) -> dict[str, float]:
    probabilities = model.predict_proba(frame[PIXELS])
    labels = probabilities.argmax(axis=1)
    target = frame[TARGET].to_numpy()
    return {
        "accuracy": float(accuracy_score(target, labels)),
        "macro_f1": float(f1_score(target, labels, average="macro")),
        "log_loss": float(log_loss(target, probabilities, labels=list(range(len(CLASSES))))),
    }


@task(name="evaluate", cache_policy=CONTENT_CACHE, persist_result=True)
def evaluate_digits(trained: TrainedNetwork, test: DataRef) -> dict[str, float]:
    return _metrics(load_artifact(trained.model), read_frame(test))


@task(name="export", cache_policy=CONTENT_CACHE, persist_result=True)
def export_digits(
    trained: TrainedNetwork, test: DataRef, opset: int, rtol: float, atol: float, ws: Workspace
) -> NetworkExport:
    """One (n, 1) float input per pixel column -> Concat -> the CNN -> label, probabilities."""
    model = load_artifact(trained.model)
    network = model.steps[-1][1]
    if isinstance(network, KerasClassifier):
        body = keras_graph(network.network(), opset)
    else:
        body = network_graph(network.network(), len(PIXELS), opset)
    graph = join(concat_front(PIXELS), "pixels", body)
    for key, value in {
        METADATA_DATASET: "digits",
        METADATA_TARGET: TARGET,
        METADATA_CLASSES: json.dumps(CLASSES),
    }.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(graph, full_check=True)
    frame = read_frame(test)
    feed = {name: frame[[name]].to_numpy(dtype=np.float32) for name in PIXELS}
    parity = allclose_parity(graph, feed, model.predict_proba(frame[PIXELS]), rtol, atol)
    path, sha = write_addressed(
        lambda tmp: onnx.save(graph, str(tmp)), ws.artifacts_dir / "onnx", "digits", ".onnx"
    )
    return NetworkExport(onnx=ArtifactRef(path=path, sha256=sha), parity=parity)


def digits_score(metric: str) -> Scorer:
    """The digits model's ``metric`` on a frame of images."""
    return lambda model, frame: _metrics(model, frame)[metric]
