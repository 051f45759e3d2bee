"""Flow ``deploy-model``: resolve a registered model that passed its gates, then produce one
target from it:

- ``bundle``: the image's build context (Dockerfile, ONNX model, server, pinned requirements,
  vendored wheels);
- ``docker``: the bundle, built through the Docker Engine API, tagged NAME:VERSION and
  NAME:ALIAS, started, checked with a real prediction against the ONNX model, stopped;
- ``kubernetes``: a kustomize overlay over infra/k8s/base and its rendered manifests, applied
  when kubectl has a current context;
- ``triton``: a Triton model repository (config.pbtxt from the ONNX graph).

Each deployment is an MLflow run in the ``deploy-model`` experiment, and the model version gets a
``trustflow.deployed.<target>`` tag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from prefect import flow
from prefect.states import State
from pydantic import BaseModel, ConfigDict

from flows.progress import StageLog, same
from tasks.deploy import (
    bundle,
    docker_image,
    docker_preflight,
    kubernetes_manifests,
    resolve_release,
    triton_repository,
)
from tasks.docker_engine import DEFAULT_BASE_IMAGE
from tasks.tracking.deployments import record_deployment
from tasks.workspace import adopt_workspace
from trustflow.deploy.bundle import Release
from trustflow.workspace import Workspace

Target = Literal["bundle", "docker", "kubernetes", "triton"]


class DeploySummary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    state: str
    target: Target
    model: dict[str, Any]
    deployment: dict[str, Any]
    mlflow_run_id: str


def release_markdown(summary: dict[str, Any]) -> str:
    """What a deploy released, for a CI job summary: the model, and per target its image (id and
    each registry reference with its digest) or its files."""
    model, deployment = summary["model"], summary["deployment"]
    lines = [f"## {model['name']} v{model['version']} -> {summary['target']}", ""]
    lines.append(f"Model `{model['source']}`; MLflow run `{summary['mlflow_run_id']}`")
    if "docker" in deployment:
        image = deployment["docker"]
        lines += ["", f"Image `{image['image']}`, id `{image['image_id']}`"]
        lines += [f"- pushed `{reference}`" for reference in image["pushed"]]
    for key in ("bundle", "kubernetes", "triton"):
        if key in deployment:
            lines += ["", f"{key}: `{deployment[key]['path']}`"]
    return "\n".join([*lines, ""])


def _mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


def describe_release(release: Release) -> str:
    return (
        f"{release.name} v{release.version} (onnx {release.sha256[:12]}, "
        f"data {release.data_md5[:12]})"
    )


def describe_bundle(made: dict[str, Any]) -> str:
    return f"{made['path']} ({made['files']} files, {made['wheels']} wheels)"


def describe_image(image: dict[str, Any]) -> str:
    orphans = image["removed_orphans"]
    removed = f"; removed {len(orphans)} left by a killed deploy" if orphans else ""
    return (
        f"{', '.join(image['tags'])}: {_mb(image['size_over_base_bytes'])} over the base, "
        f"ready in {image['ready_seconds']:.2f} s, {image['verified_rows']} rows verified "
        f"(max |diff| {image['max_abs_diff']:.1e}){removed}"
    )


def describe_k8s(made: dict[str, Any]) -> str:
    applied = f", applied to {made['applied_to']}" if made["applied_to"] else ""
    return f"{len(made['resources'])} resources in {made['manifests']}{applied}"


def describe_triton(made: dict[str, Any]) -> str:
    return f"{made['config']} ({made['inputs']} inputs)"


@flow(name="deploy-model", persist_result=False)
def deploy_model(
    model: str = "models:/adult-income@champion",
    target: Target = "docker",
    out: str | None = None,
    base_image: str = DEFAULT_BASE_IMAGE,
    port: int = 8080,
    registry: str | None = None,
    vendor_wheels: bool = True,
    apply: bool = True,
    gpu: bool = False,
    workspace: str | None = None,
) -> DeploySummary:
    """Deploy a registered model (models:/NAME@ALIAS or models:/NAME/VERSION) to a target."""
    ws = Workspace.resolve(workspace)
    adopt_workspace(ws)  # a copied or moved workspace reads its own stores
    stages = StageLog()
    release = stages.run("resolve", resolve_release, describe_release)(model_uri=model, ws=ws)
    folder = "bundle" if target == "docker" else target
    where = (
        Path(out)
        if out
        else ws.state_dir / "deploy" / f"{release.image_name}-v{release.version}" / folder
    )
    where = where.expanduser().resolve()
    deployment: dict[str, Any] = {"target": target}
    if target == "docker":
        engine = stages.run("engine", docker_preflight, same)
        deployment["engine"] = engine(base_image=base_image, port=port)
    if target in ("bundle", "docker"):
        deployment["bundle"] = stages.run("bundle", bundle, describe_bundle)(
            release=release, out=where, vendor_wheels=vendor_wheels
        )
    if target == "docker":
        deployment["docker"] = stages.run("docker", docker_image, describe_image)(
            release=release, context=where, base_image=base_image, port=port, registry=registry
        )
    elif target == "kubernetes":
        image = f"{registry.rstrip('/')}/" if registry else ""
        image += f"{release.image_name}:{release.version}"
        deployment["kubernetes"] = stages.run("kubernetes", kubernetes_manifests, describe_k8s)(
            release=release, image=image, out=where, apply=apply
        )
    elif target == "triton":
        deployment["triton"] = stages.run("triton", triton_repository, describe_triton)(
            release=release, out=where, gpu=gpu
        )
    run_id = record_deployment(release, target, deployment, where, ws)
    return DeploySummary(
        state="COMPLETED",
        target=target,
        model=release.describe(),
        deployment=deployment,
        mlflow_run_id=run_id,
    )


def run_deploy(parameters: dict[str, Any]) -> State[Any]:
    return deploy_model(**parameters, return_state=True)
