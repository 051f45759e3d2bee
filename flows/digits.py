"""Flow ``train-digits``: tracking -> ingest (scikit-learn's bundled 8x8 digits, or some of
them) -> version (DVC) -> split -> transfer or warm-start -> train (a small CNN on PyTorch
Lightning or Keras, with augmentation) -> evaluate -> export (ONNX + allclose parity) -> track ->
register (``digits-cnn``) -> promote.

The same data references, tracking, parity gate and registry as train-tabular; no fairness audit
(the images carry no sensitive features, and the registered version says so).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prefect import flow
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.states import State
from pydantic import BaseModel, ConfigDict

from flows.progress import StageLog, describe_lineage, describe_splits, same
from tasks.data import split_dataset, version_dataset
from tasks.digits import (
    digits_score,
    evaluate_digits,
    export_digits,
    ingest_digits,
)
from tasks.digits import train_digits as train_task
from tasks.tracking import champion, registry, runs
from tasks.tracking.digits import DigitsRegistration, track_digits
from tasks.workspace import adopt_workspace
from trustflow.announce import github_token
from trustflow.config import DigitsConfig, RegistryConfig
from trustflow.data.digits import ORIGIN, TARGET
from trustflow.errors import GateFailed
from trustflow.io import load_artifact
from trustflow.models.keras_net import Transfer
from trustflow.models.neural import resolve_accelerator
from trustflow.workspace import Workspace


def describe_digit_metrics(metrics: dict[str, float]) -> str:
    return f"accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}"


def describe_digits_run(registry: RegistryConfig) -> Callable[[DigitsRegistration], str]:
    def describe(registration: DigitsRegistration) -> str:
        version = registration.version
        return f"run {registration.run_id}" + (
            f", {registry.model_name} v{version}" if version else ""
        )

    return describe


class DigitsSummary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    state: str
    pipeline: str
    dataset: dict[str, Any]
    model: dict[str, Any]
    metrics: dict[str, float]
    training: dict[str, Any]
    onnx: dict[str, Any]
    mlflow: dict[str, str]
    cached_stages: list[str]


DEFAULT_CONFIG = DigitsConfig()


@flow(name="train-digits", persist_result=False)
def train_digits(
    config: DigitsConfig = DEFAULT_CONFIG, workspace: str | None = None
) -> DigitsSummary:
    """Train the digits CNN, export it to ONNX with a parity check, and register it."""
    ws = Workspace.resolve(workspace)
    stages = StageLog()
    resolve_accelerator(config.trainer.accelerator)  # cuda without a GPU stops here
    if config.registry.announce_to:
        github_token(config.registry.announce_to, os.environ)
    stages.run("workspace", adopt_workspace, same)(ws=ws)
    stages.run("tracking", runs.check_tracking_server, same)(ws=ws)
    # ingest -> version (DVC) -> split
    data = stages.run("ingest", ingest_digits, lambda r: f"{r.rows:,} images")(
        classes=config.data.classes, ws=ws
    )
    lineage = stages.run("version", version_dataset, describe_lineage)(
        data=data, origin=ORIGIN, remote_url=config.remote_url, ws=ws
    )
    splits = stages.run("split", split_dataset, describe_splits)(
        data=lineage.data, cfg=config.split, target=TARGET, ws=ws
    )
    # transfer | warm-start -> train -> evaluate -> export (ONNX + allclose parity)
    warm, transfer = None, None
    if config.transfer.source is not None:
        source = stages.run("transfer", registry.find_transfer_source, lambda w: w.source)(
            uri=config.transfer.source, ws=ws
        )
        transfer = Transfer(source, config.transfer.freeze_epochs)
    elif config.trainer.warm_start:
        warm, _ = stages.run("warm-start", registry.find_warm_start, lambda found: found[1])(
            registry=config.registry, data_md5=lineage.data.md5, ws=ws, kind="cnn"
        )
    trained = stages.run(
        "train", train_task, lambda t: f"digits-cnn ({config.model.framework}) {t.fit_seconds:.1f}s"
    )(
        train=splits.train,
        valid=splits.valid,
        params=config.train.params,
        seed=config.train.seed,
        framework=config.model.framework,
        label_fraction=config.data.label_fraction,
        transfer=transfer,
        trainer=config.trainer,
        warm=warm,
        ws=ws,
    )
    metrics = stages.run("evaluate", evaluate_digits, describe_digit_metrics)(
        trained=trained, test=splits.test
    )
    export = stages.run("export", export_digits, lambda e: e.reason())(
        trained=trained,
        test=splits.test,
        opset=config.onnx.opset,
        rtol=config.onnx.rtol,
        atol=config.onnx.atol,
        ws=ws,
    )
    # track -> register (parity passed) -> promote
    registration = stages.run("track", track_digits, describe_digits_run(config.registry))(
        config=config,
        lineage=lineage,
        trained=trained,
        metrics=metrics,
        export=export,
        splits=splits,
        ws=ws,
    )
    if registration.version is None:
        raise GateFailed(f"{config.registry.model_name} not registered: {export.reason()}")
    promotion = stages.run("promote", champion.promote, lambda p: p.reason)(
        version=registration.version,
        new_version=registration.new_version,
        model=trained.model,
        held_out=metrics[config.registry.metric],
        registry=config.registry,
        test=splits.test,
        target=TARGET,
        score=digits_score(config.registry.metric),
    )
    if config.registry.announce_to and champion.changed(promotion):
        stages.run("announce", champion.announce, lambda a: a.detail)(
            promotion=promotion, repository=config.registry.announce_to, run_id=registration.run_id
        )
    network = load_artifact(trained.model).steps[-1][1]
    return DigitsSummary(
        state="COMPLETED",
        pipeline="digits",
        dataset={
            "name": "digits",
            "md5": lineage.data.md5,
            "rows": lineage.data.rows,
            "dvc_file": lineage.dvc_file,
        },
        model={
            "name": promotion.name,
            "version": promotion.version,
            "alias": promotion.alias if promotion.promoted else None,
            "promoted": promotion.promoted,
            "reason": promotion.reason,
        },
        metrics=metrics,
        training={
            "framework": config.model.framework,
            "epochs": len(network.history_),
            "best_epoch": network.best_epoch_,
            "fit_seconds": trained.fit_seconds,
            "device": network.device_,
            "warm_start": network.warm_start_,
            "transfer": getattr(network, "transfer_", None),
        },
        onnx=export.parity,
        mlflow={"tracking_uri": ws.tracking_uri(), "run_id": registration.run_id},
        cached_stages=[stage for stage, hit in stages.cached.items() if hit],
    )


def run_digits(config: DigitsConfig, workspace: Workspace) -> State[Any]:
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: workspace.results_dir}):
        return train_digits(config=config, workspace=str(workspace.root), return_state=True)
