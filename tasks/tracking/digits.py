"""train-digits' MLflow run: config, lineage, per-epoch metrics, test metrics, parity, the model
with its ONNX form, and (when parity passed) its registered version."""

from __future__ import annotations

import mlflow
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from tasks.data import Lineage
from tasks.digits import NetworkExport, TrainedNetwork
from tasks.tracking.log import log_seen_rows, log_training
from tasks.tracking.models import MODEL_REQUIREMENTS, log_model_once
from tasks.tracking.registry import VersionFacts, register_version
from tasks.tracking.runs import origin_tags, reap_abandoned
from tasks.tracking.store import configure, experiment_id_for
from tasks.tracking.tags import ONNX_SHA_TAG, SHA_TAG
from trustflow.config import DigitsConfig
from trustflow.data.digits import PIXELS
from trustflow.io import load_artifact, read_frame
from trustflow.models.neural import NetworkClassifier
from trustflow.refs import SplitRefs
from trustflow.workspace import Workspace


class DigitsRegistration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    version: str | None  # None when the parity gate failed (nothing to serve, nothing to promote)
    new_version: bool


@task(name="track", cache_policy=NO_CACHE, persist_result=False)
def track_digits(
    config: DigitsConfig,
    lineage: Lineage,
    trained: TrainedNetwork,
    metrics: dict[str, float],
    export: NetworkExport,
    splits: SplitRefs,
    ws: Workspace,
) -> DigitsRegistration:
    """The run (config, lineage, per-epoch metrics, test metrics, parity, the model with its
    ONNX form) and, when parity passed, a version of ``registry.model_name``."""
    configure(ws)
    model = load_artifact(trained.model)
    network: NetworkClassifier = model.steps[-1][1]
    content = {SHA_TAG: trained.model.sha256, ONNX_SHA_TAG: export.onnx.sha256}
    experiment = experiment_id_for(config.tracking.experiment, ws)
    example = read_frame(splits.test)[PIXELS].head(5)
    transfer = getattr(network, "transfer_", None)
    transfer_tags = (
        {"trustflow.transfer.source": transfer["source"],
         "trustflow.transfer.frozen": ",".join(transfer["frozen"]),
         "trustflow.transfer.frozen_epochs": str(transfer["frozen_epochs"])}
        if transfer
        else {}
    )  # fmt: skip
    with mlflow.start_run(
        experiment_id=experiment,
        run_name=f"digits-cnn-{lineage.data.md5[:8]}",
        tags=origin_tags(),
    ) as run:
        reap_abandoned(experiment, run.info.run_id)
        log_seen_rows(run.info.run_id, splits.train, splits.valid)
        mlflow.log_params(
            {"kind": "cnn", "framework": config.model.framework, "seed": config.train.seed,
             "accelerator": config.trainer.accelerator,
             **{f"params.{k}": str(v) for k, v in config.train.params.items()}}
        )  # fmt: skip
        mlflow.log_dict(config.model_dump(mode="json"), "config.yaml")
        mlflow.log_dict(lineage.model_dump(mode="json"), "lineage.json")
        mlflow.log_dict(export.parity, "onnx_parity.json")
        mlflow.log_metrics(
            {**{f"test.{k}": v for k, v in metrics.items()}, "fit_seconds": trained.fit_seconds,
             "onnx.max_abs_diff": export.parity["max_abs_diff"]}
        )  # fmt: skip
        log_training(network, trained.epoch_seconds, run.info.run_id)
        mlflow.set_tags(
            {
                "trustflow.pipeline": "train-digits",
                "trustflow.data.md5": lineage.data.md5,
                "trustflow.data.dvc_file": lineage.dvc_file,
                "trustflow.onnx.parity": export.reason(),
                **content,
                **transfer_tags,
            }
        )
        model_uri = log_model_once(
            experiment,
            content,
            "digits-cnn",
            model,
            export.onnx.path,
            example,
            [
                *MODEL_REQUIREMENTS,
                "torch",
                "keras" if config.model.framework == "keras" else "lightning",
            ],
        )
    if not export.passed:
        return DigitsRegistration(run_id=run.info.run_id, version=None, new_version=False)
    version, new = register_version(
        config.registry.model_name,
        content,
        model_uri,
        run.info.run_id,
        VersionFacts(
            candidate="digits-cnn",
            kind="cnn",
            framework=config.model.framework,
            run_id=run.info.run_id,
            lineage=lineage,
            parity_passed=True,
            parity=export.reason(),
            fairness_passed=True,  # no people in the data: nothing to audit
            fairness="not applicable: images of digits, no sensitive features",
            metrics=metrics,
            extra_tags=transfer_tags,
        ),
    )
    return DigitsRegistration(run_id=run.info.run_id, version=version, new_version=new)
