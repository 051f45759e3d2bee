"""Flow ``train-digits``: tracking -> ingest (scikit-learn's bundled 8x8 digits) -> version (DVC)
-> split -> warm-start -> train (a small CNN on PyTorch Lightning, with augmentation) ->
evaluate -> export (ONNX + allclose parity) -> track -> register (``digits-cnn``) -> promote.

The same data references, tracking, parity gate and registry as train-tabular; no fairness audit
(the images carry no sensitive features, and the registered version says so).
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.states import State
from pydantic import BaseModel, ConfigDict

from flows.progress import StageLog, describe_lineage, describe_splits
from tasks.data import split_dataset, version_dataset
from tasks.digits import (
    digits_score,
    evaluate_digits,
    export_digits,
    ingest_digits,
)
from tasks.digits import train_digits as train_task
from tasks.tracking import champion, registry, runs
from tasks.tracking.digits import track_digits
from tasks.workspace import adopt_workspace
from trustflow.config import DigitsConfig
from trustflow.data.digits import ORIGIN, TARGET
from trustflow.errors import GateFailed
from trustflow.io import load_artifact
from trustflow.models.neural import resolve_accelerator
from trustflow.workspace import Workspace


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
    stages.run("workspace", adopt_workspace, ws, detail=lambda d: d)
    stages.run("tracking", runs.check_tracking_server, ws, detail=lambda d: d)
    data = stages.run("ingest", ingest_digits, ws, detail=lambda r: f"{r.rows:,} images")
    lineage = stages.run(
        "version",
        version_dataset,
        data,
        ORIGIN,
        config.remote_url,
        ws,
        detail=describe_lineage,
    )
    splits = stages.run(
        "split",
        split_dataset,
        lineage.data,
        config.split,
        TARGET,
        ws,
        detail=describe_splits,
    )
    warm = None
    if config.trainer.warm_start:
        warm, _ = stages.run(
            "warm-start",
            registry.find_warm_start,
            config.registry,
            lineage.data.md5,
            ws,
            "cnn",
            detail=lambda found: found[1],
        )
    trained = stages.run(
        "train",
        train_task,
        splits.train,
        splits.valid,
        config.train.params,
        config.train.seed,
        config.trainer,
        warm,
        ws,
        detail=lambda t: f"digits-cnn {t.fit_seconds:.1f}s",
    )
    metrics = stages.run(
        "evaluate",
        evaluate_digits,
        trained,
        splits.test,
        detail=lambda m: f"accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f}",
    )
    export = stages.run(
        "export",
        export_digits,
        trained,
        splits.test,
        config.onnx.opset,
        config.onnx.rtol,
        config.onnx.atol,
        ws,
        detail=lambda e: e.reason(),
    )
    registration = stages.run(
        "track",
        track_digits,
        config,
        lineage,
        trained,
        metrics,
        export,
        splits,
        ws,
        detail=lambda r: (
            f"run {r.run_id}"
            + (f", {config.registry.model_name} v{r.version}" if r.version else "")
        ),
    )
    if registration.version is None:
        raise GateFailed(f"{config.registry.model_name} not registered: {export.reason()}")
    promotion = stages.run(
        "promote",
        champion.promote,
        registration.version,
        registration.new_version,
        trained.model,
        metrics[config.registry.metric],
        config.registry,
        splits.test,
        TARGET,
        digits_score(config.registry.metric),
        detail=lambda p: p.reason,
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
            "epochs": len(network.history_),
            "best_epoch": network.best_epoch_,
            "fit_seconds": trained.fit_seconds,
            "device": network.device_,
            "warm_start": network.warm_start_,
        },
        onnx=export.parity,
        mlflow={"tracking_uri": ws.tracking_uri(), "run_id": registration.run_id},
        cached_stages=[stage for stage, hit in stages.cached.items() if hit],
    )


def run_digits(config: DigitsConfig, workspace: Workspace) -> State[Any]:
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: workspace.results_dir}):
        return train_digits(config=config, workspace=str(workspace.root), return_state=True)
