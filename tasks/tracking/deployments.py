"""What a deployment records: an MLflow run in the ``deploy-model`` experiment and a tag on the
version it deployed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow

from tasks.tracking.runs import origin_tags
from tasks.tracking.store import configure, experiment_id_for
from trustflow.deploy.bundle import Release
from trustflow.workspace import Workspace

SMALL_FILES = ("Dockerfile", "requirements.txt", "manifests.yaml", "kustomization.yaml", "*.pbtxt")


def record_deployment(
    release: Release, target: str, deployment: dict[str, Any], out: Path, ws: Workspace
) -> str:
    """An MLflow run in the ``deploy-model`` experiment (parameters, the image's size and start
    time, the rendered files), and a tag on the model version naming where it went."""
    configure(ws)
    client = mlflow.MlflowClient()
    experiment_id = experiment_id_for("deploy-model", ws)
    image = deployment.get("docker", {})
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"{release.image_name}-v{release.version}-{target}",
        tags=origin_tags(),
    ) as run:
        mlflow.log_params(
            {
                "model": release.source,
                "alias": release.alias,
                "target": target,
                "onnx_sha256": release.sha256,
                "data_md5": release.data_md5,
            }
        )
        if image:
            mlflow.log_metrics(
                {
                    "image_size_mb": image["size_bytes"] / 1e6,
                    "image_size_over_base_mb": image["size_over_base_bytes"] / 1e6,
                    "build_seconds": image["build_seconds"],
                    "ready_seconds": image["ready_seconds"],
                    "verify_max_abs_diff": image["max_abs_diff"],
                }
            )
        mlflow.log_dict(deployment, "deployment.json")
        for pattern in SMALL_FILES:
            for path in sorted(out.rglob(pattern)):
                if "base" not in path.relative_to(out).parts:
                    mlflow.log_artifact(str(path), "files")
    where = image.get("image") or str(out)
    client.set_model_version_tag(
        release.name, release.version, f"trustflow.deployed.{target}", where
    )
    return str(run.info.run_id)
