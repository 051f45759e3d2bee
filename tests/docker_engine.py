"""A Docker Engine for the `docker` tests, and the local base image they build on.

CI installs Debian's docker.io and debootstrap (.ci/run); this starts ``dockerd`` when none
answers (root only, no iptables and no bridge, so containers use the host's network), and
makes the base image from Debian packages (infra/docker/base-image.sh) because no image registry
is reachable here. Where neither can be done the tests skip, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BASE_IMAGE = "trustflow-base:bookworm"
DOCKERD_LOG = REPO / "test-artifacts" / "dockerd.log"


def _client():
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=300)
        client.ping()
        return client
    except DockerException:
        return None


def _start_dockerd() -> str | None:
    """Start dockerd in the background; None on success, else why it cannot be."""
    if shutil.which("dockerd") is None:
        return "dockerd is not installed (Debian: apt-get install docker.io)"
    if os.geteuid() != 0:
        return "dockerd needs root and no engine is running"
    DOCKERD_LOG.parent.mkdir(parents=True, exist_ok=True)
    with DOCKERD_LOG.open("ab") as log:
        subprocess.Popen(
            ["dockerd", "--iptables=false", "--bridge=none"],
            stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _client() is not None:
            return None
        time.sleep(0.5)
    return f"dockerd did not answer within 60 s (see {DOCKERD_LOG})"


def docker_client():
    """A client for a running engine with the base image, or pytest.skip with the reason."""
    client = _client()
    if client is None:
        reason = _start_dockerd()
        if reason is not None:
            pytest.skip(f"no Docker engine: {reason}")
        client = _client()
    if not client.images.list(name=BASE_IMAGE):
        if shutil.which("debootstrap") is None:
            pytest.skip("no base image, and no debootstrap to make one (Debian: debootstrap)")
        done = subprocess.run(
            [str(REPO / "infra" / "docker" / "base-image.sh"), BASE_IMAGE],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert done.returncode == 0, f"base-image.sh failed: {done.stderr[-2000:]}"
    return client
