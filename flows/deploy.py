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

from flows.progress import StageLog
from tasks.deploy import (
    bundle,
    docker_image,
    docker_preflight,
    kubernetes_manifests,
    resolve_release,
    triton_repository,
)
from tasks.tracking.deployments import record_deployment
from tasks.workspace import adopt_workspace
from trustflow.deploy.docker import DEFAULT_BASE_IMAGE
from trustflow.workspace import Workspace

Target = Literal["bundle", "docker", "kubernetes", "triton"]


class DeploySummary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    state: str
    target: Target
    model: dict[str, Any]
    deployment: dict[str, Any]
    mlflow_run_id: str


def _mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


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
    release = stages.run(
        "resolve",
        resolve_release,
        model,
        ws,
        detail=lambda r: f"{r.name} v{r.version} (onnx {r.sha256[:12]}, data {r.data_md5[:12]})",
    )
    folder = "bundle" if target == "docker" else target
    where = (
        Path(out)
        if out
        else ws.state_dir / "deploy" / f"{release.image_name}-v{release.version}" / folder
    )
    where = where.expanduser().resolve()
    deployment: dict[str, Any] = {"target": target}
    if target == "docker":
        deployment["engine"] = stages.run(
            "engine", docker_preflight, base_image, port, detail=lambda v: v
        )
    if target in ("bundle", "docker"):
        deployment["bundle"] = stages.run(
            "bundle",
            bundle,
            release,
            where,
            vendor_wheels,
            detail=lambda b: f"{b['path']} ({b['files']} files, {b['wheels']} wheels)",
        )
    if target == "docker":
        deployment["docker"] = stages.run(
            "docker",
            docker_image,
            release,
            where,
            base_image,
            port,
            registry,
            detail=lambda d: (
                f"{', '.join(d['tags'])}: {_mb(d['size_over_base_bytes'])} over the base, "
                f"ready in {d['ready_seconds']:.2f} s, {d['verified_rows']} rows verified "
                f"(max |diff| {d['max_abs_diff']:.1e})"
            ),
        )
    elif target == "kubernetes":
        image = f"{registry.rstrip('/')}/" if registry else ""
        image += f"{release.image_name}:{release.version}"
        deployment["kubernetes"] = stages.run(
            "kubernetes",
            kubernetes_manifests,
            release,
            image,
            where,
            apply,
            detail=lambda k: (
                f"{len(k['resources'])} resources in {k['manifests']}"
                + (f", applied to {k['applied_to']}" if k["applied_to"] else "")
            ),
        )
    elif target == "triton":
        deployment["triton"] = stages.run(
            "triton",
            triton_repository,
            release,
            where,
            gpu,
            detail=lambda t: f"{t['config']} ({t['inputs']} inputs)",
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
