"""Build, run and verify a model image through the Docker Engine API (the ``docker`` SDK): the
deploy tasks' side effects, on the build context the core renders (trustflow.deploy.bundle).

The image is proven, not assumed: it is started on a free port of the host's network, must
answer ``/readyz``, and must give the same probabilities as the ONNX graph run here on the
release's example rows. The verification container is removed whatever happens: when the
deploy fails or is interrupted, by the deploy itself; when its process was killed outright, by
the next deploy on this host, which removes the verification containers of processes that are
gone (the container names its process in a label).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from trustflow.deploy.bundle import Release
from trustflow.errors import DeployError
from trustflow.serving.run import check_port
from trustflow.serving.scorer import ModelLoadError, ModelRelease, Scorer

DEFAULT_BASE_IMAGE = "python:3.11-slim-bookworm"
MAX_PROBABILITY_DIFF = 1e-6
BUILD_STAGE_LABEL = "ai.trustflow.stage=build"  # infra/docker/Dockerfile's build stage
VERIFY_LABEL = "ai.trustflow.verify"
OWNER_LABEL = "ai.trustflow.verify.owner"  # HOST:PID of the deploy that started it


@dataclass(frozen=True)
class ImageReport:
    image: str  # NAME:VERSION
    tags: list[str]
    image_id: str
    size_bytes: int
    base_image: str
    base_size_bytes: int
    build_seconds: float
    ready_seconds: float  # container start to /readyz answering 200
    verified_rows: int
    max_abs_diff: float
    pushed: list[str]
    removed_orphans: list[str]  # verification containers a killed deploy left, removed first

    @property
    def size_over_base_bytes(self) -> int:
        return self.size_bytes - self.base_size_bytes


def engine() -> Any:
    """A client for the daemon at $DOCKER_HOST (default /var/run/docker.sock), or one line
    saying none answers."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except DockerException as exc:
        reason = str(exc).split(": ", 1)[-1][:200]
        raise DeployError(
            f"no Docker daemon reachable ({reason}); start one, or use --target bundle and "
            "build the context elsewhere"
        ) from None
    return client


def preflight(base_image: str, port: int) -> str:
    """Before any file is written: a daemon answers, the verification port is free, and the
    base image is on the engine (pulled if need be). Describes the engine."""
    client = engine()
    _check_port(port)
    base_image_size(client, base_image)
    version = client.version()
    return f"Docker Engine {version.get('Version', '?')} (API {version.get('ApiVersion', '?')})"


def base_image_size(client: Any, base_image: str) -> int:
    """The base image's size, pulling it first if this engine does not have it."""
    from docker.errors import APIError, ImageNotFound

    try:
        return int(client.images.get(base_image).attrs["Size"])
    except ImageNotFound:
        pass
    try:
        return int(client.images.pull(base_image).attrs["Size"])
    except APIError as exc:
        reason = str(exc.explanation or exc)[-200:]
        raise DeployError(
            f"base image {base_image} is not on this engine and cannot be pulled ({reason}); "
            "make one with infra/docker/base-image.sh or pass another --base-image"
        ) from None


def build_image(client: Any, context: Path, release: Release, base_image: str) -> tuple[Any, float]:
    """``docker build`` through the API; a failed step is one line naming it."""
    from docker.errors import APIError, BuildError

    tag = f"{release.image_name}:{release.version}"
    started = time.perf_counter()
    try:
        image, _ = client.images.build(
            path=str(context),
            tag=tag,
            buildargs={"BASE_IMAGE": base_image},
            rm=True,
            forcerm=True,  # no intermediate containers left after a failed step
            network_mode="host",  # engines started without a bridge network need it
        )
    except BuildError as exc:
        lines = [str(i.get("stream") or i.get("error") or "").strip() for i in exc.build_log]
        detail = next((line for line in reversed(lines) if line), str(exc))
        raise DeployError(f"docker build of {tag} failed: {exc.msg} ({detail[-300:]})") from None
    except APIError as exc:
        raise DeployError(f"docker build of {tag} failed: {exc.explanation}") from None
    finally:
        # The multi-stage build leaves its build stage as an untagged image; it is not needed.
        with contextlib.suppress(APIError):
            client.images.prune(filters={"dangling": True, "label": BUILD_STAGE_LABEL})
    return image, time.perf_counter() - started


def _wait_ready(container: Any, url: str, timeout: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        container.reload()
        if container.status in ("exited", "dead"):
            logs = container.logs(tail=5).decode("utf-8", "replace").strip()
            raise DeployError(f"the container exited before it was ready: {logs[-300:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return time.perf_counter() - started
        time.sleep(0.05)
    raise DeployError(f"the container was not ready within {timeout:.0f} s ({url}/readyz)")


def _records(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    rows = len(next(iter(columns.values()))) if columns else 0
    return [{name: values[i] for name, values in columns.items()} for i in range(rows)]


def verify_prediction(url: str, release: Release) -> tuple[int, float]:
    """Score the example rows in the container and here; (rows, max |difference|)."""
    if not release.example:
        raise DeployError(f"{release.source} has no input example to verify the image with")
    local = Scorer(ModelRelease(release.name, release.version, release.source, release.graph),
                   device="cpu")  # fmt: skip
    rows = len(next(iter(release.example.values())))
    expected = local.predict(release.example, rows).probabilities
    response = httpx.post(
        f"{url}/v1/predict", json={"records": _records(release.example)}, timeout=30
    )
    if response.status_code != 200:
        raise DeployError(f"the container refused a prediction: HTTP {response.status_code} "
                          f"{response.text[:300]}")  # fmt: skip
    got = np.asarray(response.json()["probabilities"], dtype=np.float64)
    diff = float(np.abs(got - expected).max())
    if diff > MAX_PROBABILITY_DIFF:
        raise DeployError(
            f"the container's probabilities differ from the ONNX model's by {diff:.2e} "
            f"(limit {MAX_PROBABILITY_DIFF:g})"
        )
    return rows, diff


def _check_port(port: int) -> None:
    try:
        check_port("127.0.0.1", port)
    except ModelLoadError as exc:
        raise DeployError(f"{exc}; choose another --port") from None


def run_and_verify(
    client: Any, image: Any, release: Release, port: int, ready_timeout: float = 60
) -> tuple[float, int, float]:
    """Start the image on 127.0.0.1:``port`` as Kubernetes would run it (non-root, read-only
    root filesystem, no capabilities), check it, and remove it. (ready s, rows, max diff)"""
    _check_port(port)
    name = f"trustflow-verify-{release.image_name}-{uuid.uuid4().hex[:8]}"
    try:
        container = client.containers.run(
            image.id,
            detach=True,
            name=name,
            network_mode="host",
            environment={"PORT": str(port), "HOST": "127.0.0.1"},
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            labels={VERIFY_LABEL: release.source, OWNER_LABEL: _owner()},
        )
        url = f"http://127.0.0.1:{port}"
        ready = _wait_ready(container, url, ready_timeout)
        rows, diff = verify_prediction(url, release)
    finally:  # by name: an interrupt can land after the engine made it, before `run` returned
        with contextlib.suppress(Exception):
            client.containers.get(name).remove(force=True)
    return ready, rows, diff


def _owner(pid: int | None = None) -> str:
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def remove_orphaned_verifiers(client: Any) -> list[str]:
    """Remove the verification containers whose deploy process, on this host, is gone (killed
    before its cleanup ran: they would keep running and hold their port); their names."""
    import psutil

    host = socket.gethostname()
    removed = []
    for container in client.containers.list(all=True, filters={"label": VERIFY_LABEL}):
        owner_host, _, pid = container.labels.get(OWNER_LABEL, "").rpartition(":")
        if owner_host != host or not pid.isdigit() or psutil.pid_exists(int(pid)):
            continue  # another host's, from before the label, or its deploy is still running
        with contextlib.suppress(Exception):  # removed meanwhile by another deploy
            container.remove(force=True)
            removed.append(str(container.name))
    return removed


def push(client: Any, image: Any, release: Release, registry: str, tags: list[str]) -> list[str]:
    """Tag ``registry/NAME:TAG`` for each tag and push it; each pushed reference, with the
    digest the registry gave it (``REPO:TAG@sha256:...``) for the release's audit trail."""
    from docker.errors import APIError

    pushed = []
    repository = f"{registry.rstrip('/')}/{release.image_name}"
    for tag in tags:
        image.tag(repository, tag)
        digest = ""
        try:
            for line in client.images.push(repository, tag, stream=True, decode=True):
                if "error" in line:
                    raise DeployError(f"push of {repository}:{tag} failed: {line['error']}")
                digest = line.get("aux", {}).get("Digest", digest)
        except APIError as exc:
            raise DeployError(f"push of {repository}:{tag} failed: {exc.explanation}") from None
        pushed.append(f"{repository}:{tag}" + (f"@{digest}" if digest else ""))
    return pushed


def build_run_verify(
    context: Path, release: Release, base_image: str, port: int, registry: str | None
) -> ImageReport:
    client = engine()
    orphans = remove_orphaned_verifiers(client)
    base_size = base_image_size(client, base_image)
    image, build_seconds = build_image(client, context, release, base_image)
    tags = [release.version] + ([release.alias] if release.alias else [])
    for tag in tags[1:]:
        image.tag(release.image_name, tag)
    ready, rows, diff = run_and_verify(client, image, release, port)
    pushed = push(client, image, release, registry, tags) if registry else []
    return ImageReport(
        image=f"{release.image_name}:{release.version}",
        tags=[f"{release.image_name}:{tag}" for tag in tags],
        image_id=image.id,
        size_bytes=int(client.images.get(image.id).attrs["Size"]),
        base_image=base_image,
        base_size_bytes=base_size,
        build_seconds=round(build_seconds, 2),
        ready_seconds=round(ready, 3),
        verified_rows=rows,
        max_abs_diff=diff,
        pushed=pushed,
        removed_orphans=orphans,
    )
