"""Deploy tasks: resolve a registered model (its gates must have passed), then one task per
target. The targets themselves live in the core (src/trustflow/deploy)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import docker_engine as docker
from tasks.tracking.source import RegistrySource, input_example
from tasks.tracking.store import configure
from tasks.tracking.tags import ENCRYPTION_PASSED_TAG, GIT_REVISION_TAG
from trustflow.deploy import kubernetes, triton
from trustflow.deploy.bundle import Release, build_bundle
from trustflow.errors import DeployError
from trustflow.workspace import Workspace


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
        example=input_example(served.name, served.version),
        encrypted=version.tags.get(ENCRYPTION_PASSED_TAG) == "true",
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


def current_context() -> str | None:
    """kubectl's current context, if kubectl is installed and one is configured."""
    if shutil.which("kubectl") is None:
        return None
    done = subprocess.run(
        ["kubectl", "config", "current-context"], capture_output=True, text=True, timeout=30
    )
    return done.stdout.strip() or None if done.returncode == 0 else None


@task(name="kubernetes", cache_policy=NO_CACHE, persist_result=False)
def kubernetes_manifests(release: Release, image: str, out: Path, apply: bool) -> dict[str, Any]:
    """The core renders the overlay and manifests; ``kubectl apply -k`` them when ``apply`` and
    kubectl has a current context."""
    made = kubernetes.write_manifests(release, image, out)
    context = current_context() if apply else None
    if context is not None:
        done = subprocess.run(["kubectl", "apply", "-k", str(out)], capture_output=True, text=True)
        if done.returncode != 0:
            raise DeployError(f"kubectl apply -k {out} (context {context}) failed: "
                              f"{done.stderr.strip()[-300:]}")  # fmt: skip
    return {
        "path": str(made.path),
        "manifests": str(made.manifests),
        "resources": made.resources,
        "image": made.image,
        "applied_to": context,
    }


@task(name="triton", cache_policy=NO_CACHE, persist_result=False)
def triton_repository(release: Release, out: Path, gpu: bool) -> dict[str, Any]:
    return triton.summary(triton.write_repository(release, out, gpu=gpu))
