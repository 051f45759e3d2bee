"""Kubernetes manifests for a model: a kustomize overlay over ``infra/k8s/base``, and the same
resources rendered to one ``manifests.yaml`` (for ``kubectl apply -f`` and offline validation).

The renderer applies exactly the transformations the overlay asks kustomize for (namePrefix,
labels, commonAnnotations, images); tests check it against ``kubectl kustomize`` where kubectl
is installed.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trustflow.deploy.bundle import Release, infra_dir, staged_directory
from trustflow.errors import DeployError

BASE_IMAGE_NAME = "trustflow-model"  # the image name in the base Deployment
OVERLAY = "kustomization.yaml"
MANIFESTS = "manifests.yaml"


@dataclass(frozen=True)
class Manifests:
    path: Path  # the overlay directory (kubectl apply -k)
    manifests: Path  # the rendered resources (kubectl apply -f)
    resources: list[str]  # Kind/name
    image: str


def overlay(release: Release, image: str) -> dict[str, Any]:
    name, tag = image.rsplit(":", 1)
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["base"],
        "namePrefix": f"{release.image_name}-",
        "labels": [
            # Stable for the model: selects its pods, so it may not change between versions.
            {"pairs": {"app.kubernetes.io/instance": release.image_name}, "includeSelectors": True},
            {"pairs": {"app.kubernetes.io/version": release.version}, "includeTemplates": True},
        ],
        "commonAnnotations": {
            "ai.trustflow/model": release.source,
            "ai.trustflow/onnx-sha256": release.sha256,
            "ai.trustflow/data-md5": release.data_md5,
            "ai.trustflow/git-revision": release.git_revision,
        },
        "images": [{"name": BASE_IMAGE_NAME, "newName": name, "newTag": tag}],
    }


def _pod_template(resource: dict[str, Any]) -> dict[str, Any] | None:
    return resource.get("spec", {}).get("template") if resource["kind"] == "Deployment" else None


def _add_labels(
    resource: dict[str, Any], pairs: dict[str, str], selectors: bool, templates: bool
) -> None:
    resource["metadata"].setdefault("labels", {}).update(pairs)
    spec = resource.get("spec", {})
    template = _pod_template(resource)
    if selectors:
        if resource["kind"] == "Service":
            spec.setdefault("selector", {}).update(pairs)
        elif "selector" in spec:
            spec["selector"].setdefault("matchLabels", {}).update(pairs)
    if template is not None and (selectors or templates):
        template.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def _transform(resources: list[dict[str, Any]], kustomization: dict[str, Any]) -> None:
    prefix = kustomization.get("namePrefix", "")
    for resource in resources:
        resource["metadata"]["name"] = prefix + resource["metadata"]["name"]
        target = resource.get("spec", {}).get("scaleTargetRef")
        if target is not None:  # kustomize renames references too
            target["name"] = prefix + target["name"]
        for entry in kustomization.get("labels", []):
            _add_labels(
                resource,
                entry["pairs"],
                selectors=entry.get("includeSelectors", False),
                templates=entry.get("includeTemplates", False),
            )
        annotations = kustomization.get("commonAnnotations", {})
        if annotations:
            resource["metadata"].setdefault("annotations", {}).update(annotations)
            template = _pod_template(resource)
            if template is not None:
                template.setdefault("metadata", {}).setdefault("annotations", {}).update(
                    annotations
                )
        template = _pod_template(resource)
        for image in kustomization.get("images", []):
            for container in (template or {}).get("spec", {}).get("containers", []):
                if container["image"].split(":")[0] == image["name"]:
                    container["image"] = f"{image['newName']}:{image['newTag']}"


def render(directory: Path) -> list[dict[str, Any]]:
    """The resources a kustomization directory builds to (base first, then this overlay)."""
    kustomization = yaml.safe_load((directory / OVERLAY).read_text())
    resources: list[dict[str, Any]] = []
    for entry in kustomization["resources"]:
        path = directory / entry
        if path.is_dir():
            resources += render(path)
        else:
            resources += list(yaml.safe_load_all(path.read_text()))
    _transform(resources, kustomization)
    return resources


def write_manifests(release: Release, image: str, out: Path) -> Manifests:
    """Write the overlay and the rendered manifests (applying them is the deploy task's)."""
    base = infra_dir() / "k8s" / "base"
    if not (base / OVERLAY).is_file():
        raise DeployError(f"{base}/{OVERLAY} not found")
    with staged_directory(out, MANIFESTS) as staging:
        shutil.copytree(base, staging / "base")
        (staging / OVERLAY).write_text(yaml.safe_dump(overlay(release, image), sort_keys=False))
        resources = render(staging)
        (staging / MANIFESTS).write_text(yaml.safe_dump_all(resources, sort_keys=False))
    return Manifests(
        path=out,
        manifests=out / MANIFESTS,
        resources=[f"{r['kind']}/{r['metadata']['name']}" for r in resources],
        image=image,
    )
