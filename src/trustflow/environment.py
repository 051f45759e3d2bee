"""What trained a model, for audit: the exact package versions of the running environment (as
`pip freeze` writes them) and the CI run that trained it, when one did."""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Mapping
from importlib import metadata

from pydantic import BaseModel, ConfigDict


class Environment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    requirements: str  # `name==version` lines, sorted by name: the environment, reinstallable
    python: str
    ci_run_url: str | None  # the CI job that ran the training, when it ran in CI

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.requirements.encode()).hexdigest()


def installed_requirements() -> str:
    """Every installed distribution as a `name==version` line, sorted case-insensitively as
    `pip freeze` sorts them (read from the package metadata, so no pip subprocess)."""
    pins: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:  # a broken install can leave a dist-info folder without metadata
            pins.setdefault(name.lower(), f"{name}=={dist.version}")
    return "".join(f"{pins[key]}\n" for key in sorted(pins))


def ci_run_url(env: Mapping[str, str]) -> str | None:
    """The GitHub Actions run from its documented default variables; None outside Actions."""
    server, repo, run = (
        env.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    )
    if not (server and repo and run):
        return None
    attempt = env.get("GITHUB_RUN_ATTEMPT")
    return f"{server}/{repo}/actions/runs/{run}" + (f"/attempts/{attempt}" if attempt else "")


def current_environment(env: Mapping[str, str]) -> Environment:
    return Environment(
        requirements=installed_requirements(),
        python=platform.python_version(),
        ci_run_url=ci_run_url(env),
    )
