"""Deploy tasks: resolve a registered model (its gates must have passed), then one task per
target. The targets themselves live in the core (src/trustflow/deploy)."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.tracking import GIT_REVISION_TAG, RegistrySource, configure, experiment_id_for
from trustflow.deploy import docker, kubernetes, triton
from trustflow.deploy.bundle import Release, build_bundle
from trustflow.workspace import Workspace


def _input_example(name: str, version: str) -> dict[str, list[Any]]:
    """The version's MLflow input example (rows the pipeline logged with it), as columns."""
    with tempfile.TemporaryDirectory(prefix="trustflow-deploy-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}/input_example.json", dst_path=tmp
            )
        except (MlflowException, OSError):
            return {}
        example = json.loads(Path(path).read_text())
    columns = example.get("columns", [])
    return {column: [row[i] for row in example.get("data", [])] for i, column in enumerate(columns)}


@task(name="resolve", cache_policy=NO_CACHE, persist_result=False)
def resolve_release(model_uri: str, ws: Workspace) -> Release:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> the ONNX graph and its facts.
    A missing alias, or a version that failed parity or fairness, stops here in one line."""
    configure(ws)
    source = RegistrySource(model_uri)
    version = source.model_version()
    served = source.fetch(version)  # refuses versions that failed a gate
    return Release(
        name=served.name,
        version=served.version,
        alias=source.alias,
        source=served.source,
        graph=served.graph,
        data_md5=version.tags.get("trustflow.data.md5", "unknown"),
        git_revision=version.tags.get(GIT_REVISION_TAG, "unknown"),
        example=_input_example(served.name, served.version),
    )


@task(name="bundle", cache_policy=NO_CACHE, persist_result=False)
def bundle(release: Release, out: Path, vendor_wheels: bool) -> dict[str, Any]:
    made = build_bundle(release, out, vendor=vendor_wheels)
    return {
        "path": str(made.path),
        "files": made.files,
        "wheels": made.wheels,
        "requirements": len(made.requirements),
    }


@task(name="engine", cache_policy=NO_CACHE, persist_result=False)
def docker_preflight(base_image: str, port: int) -> str:
    return docker.preflight(base_image, port)


@task(name="docker", cache_policy=NO_CACHE, persist_result=False)
def docker_image(
    release: Release, context: Path, base_image: str, port: int, registry: str | None
) -> dict[str, Any]:
    report = docker.build_run_verify(context, release, base_image, port, registry)
    return {**asdict(report), "size_over_base_bytes": report.size_over_base_bytes}


@task(name="kubernetes", cache_policy=NO_CACHE, persist_result=False)
def kubernetes_manifests(release: Release, image: str, out: Path, apply: bool) -> dict[str, Any]:
    made = kubernetes.write_manifests(release, image, out, apply=apply)
    return {
        "path": str(made.path),
        "manifests": str(made.manifests),
        "resources": made.resources,
        "image": made.image,
        "applied_to": made.applied,
    }


@task(name="triton", cache_policy=NO_CACHE, persist_result=False)
def triton_repository(release: Release, out: Path, gpu: bool) -> dict[str, Any]:
    return triton.summary(triton.write_repository(release, out, gpu=gpu))


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
        experiment_id=experiment_id, run_name=f"{release.image_name}-v{release.version}-{target}"
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
