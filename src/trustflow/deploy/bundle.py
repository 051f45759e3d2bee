"""The build context of a model's inference-server image.

    <out>/Dockerfile        infra/docker/Dockerfile with this model's build arguments filled in
    <out>/model/model.onnx  the release's graph, and model/release.json (what it is, where from)
    <out>/app/trustflow/    the core package (the server imports trustflow.serving only)
    <out>/requirements.txt  the server's dependencies, pinned to the versions installed here
    <out>/wheels/           those dependencies as wheels, when vendored (air-gapped builds)

The context is written next to ``<out>`` and renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import trustflow
from trustflow.errors import DeployError

# What `python -m trustflow.serving` imports; their own dependencies are added when pinning.
SERVER_PACKAGES = (
    "numpy",
    "onnxruntime",
    "fastapi",
    "pydantic",
    "uvicorn",
    "httptools",
    "uvloop",
    "orjson",
    "prometheus-client",
)
# ... and what `--encrypted` adds: onnx splits the graph, TenSEAL evaluates the head.
ENCRYPTED_PACKAGES = ("onnx", "tenseal")
RELEASE_FILE = "model/release.json"  # what the image serves; also marks a bundle directory
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass(frozen=True)
class Release:
    """A registered model version that passed its gates, as the deploy targets need it."""

    name: str
    version: str
    alias: str | None
    source: str  # models:/NAME/VERSION
    graph: bytes = field(repr=False)
    data_md5: str = "unknown"
    git_revision: str = "unknown"
    example: dict[str, list[Any]] = field(default_factory=dict, repr=False)  # columns
    encrypted: bool = False  # it passed the encryption parity gate: the image serves --encrypted

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.graph).hexdigest()

    @property
    def image_name(self) -> str:
        """The model name as a Docker repository / Kubernetes name: [a-z0-9-], at most 53."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")[:53].strip("-")
        if not slug:
            raise DeployError(f"model name '{self.name}' has no letters or digits to name it by")
        return slug

    def describe(self) -> dict[str, Any]:
        facts = {k: v for k, v in asdict(self).items() if k not in ("graph", "example")}
        return {**facts, "onnx_sha256": self.sha256, "python": PYTHON_VERSION}


def repository_root() -> Path:
    """The checkout trustflow runs from (infra/ lives there)."""
    return Path(trustflow.__file__).resolve().parents[2]


def infra_dir() -> Path:
    infra = Path(os.environ.get("TRUSTFLOW_INFRA", repository_root() / "infra"))
    if not (infra / "docker" / "Dockerfile").is_file():
        raise DeployError(
            f"{infra}/docker/Dockerfile not found: run from a trustflow checkout or set "
            "TRUSTFLOW_INFRA to its infra/ directory"
        )
    return infra


@contextmanager
def staged_directory(out: Path, marker: str) -> Iterator[Path]:
    """Yield an empty directory beside ``out``; on success it replaces ``out``, on failure it is
    removed. An existing ``out`` is only replaced if it holds ``marker`` (an earlier output of
    the same kind), never a directory of someone else's."""
    ours = out.is_dir() and (not any(out.iterdir()) or (out / marker).exists())
    if out.exists() and not ours:
        raise DeployError(f"{out} exists and is not an earlier trustflow output; choose another")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        yield staging
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old."))
            os.replace(out, old / "out")
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def pinned_requirements(packages: tuple[str, ...] = SERVER_PACKAGES) -> list[str]:
    """``name==version`` for ``packages`` and everything they need, as installed here."""
    environment = {"extra": ""}
    versions: dict[str, str] = {}
    todo = list(packages)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in versions:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise DeployError(f"{name} is not installed here; the server needs it") from None
        versions[name] = dist.version
        for spec in dist.requires or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                todo.append(requirement.name)
    return [f"{name}=={version}" for name, version in sorted(versions.items())]


def vendor_wheels(requirements: Path, wheels: Path) -> int:
    """Download the pinned wheels into the context (for this Python and platform)."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--only-binary", ":all:", "--requirement", str(requirements),
         "--dest", str(wheels)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        raise DeployError(f"cannot vendor the wheels: {(lines or ['pip failed'])[-1]}")
    return len(list(wheels.glob("*.whl")))


def fill_wheelhouse(dest: Path) -> int:
    """Download every wheel a bundle can vendor (plain and encrypted) into ``dest``, once, while
    an index is reachable. With ``PIP_FIND_LINKS=dest`` and ``PIP_NO_INDEX=1`` set, later bundles
    vendor their wheels from it without a network (the test suite runs that way)."""
    dest.mkdir(parents=True, exist_ok=True)
    requirements = dest / "requirements.txt"
    requirements.write_text("\n".join(pinned_requirements(SERVER_PACKAGES + ENCRYPTED_PACKAGES)))
    return vendor_wheels(requirements, dest)


def build_args(release: Release) -> dict[str, str]:
    return {
        "PYTHON_VERSION": PYTHON_VERSION,
        "MODEL_NAME": release.name,
        "MODEL_VERSION": release.version,
        "MODEL_SOURCE": release.source,
        "DATA_MD5": release.data_md5,
        "GIT_REVISION": release.git_revision,
        "ONNX_SHA256": release.sha256,
        "ENCRYPTED": "1" if release.encrypted else "0",
    }


def render_dockerfile(template: str, args: dict[str, str]) -> str:
    """Give each ``ARG NAME`` of the template its value as a default, so a plain
    ``docker build .`` in the bundle builds this model's image."""
    missing = [name for name in args if not re.search(rf"^ARG {name}$", template, re.M)]
    if missing:
        raise DeployError(f"the Dockerfile template has no ARG {missing[0]}")
    for name, value in args.items():
        default = f"ARG {name}={json.dumps(value)}"
        template = re.sub(rf"^ARG {name}$", default.replace("\\", "\\\\"), template, flags=re.M)
    return template


@dataclass(frozen=True)
class Bundle:
    path: Path
    files: int
    wheels: int
    requirements: list[str]


def build_bundle(
    release: Release,
    out: Path,
    vendor: bool = True,
    fetch_wheels: Callable[[Path, Path], int] = vendor_wheels,
) -> Bundle:
    """Write the build context for ``release`` to ``out`` (atomically)."""
    infra = infra_dir()
    packages = SERVER_PACKAGES + (ENCRYPTED_PACKAGES if release.encrypted else ())
    requirements = pinned_requirements(packages)
    with staged_directory(out, RELEASE_FILE) as context:
        (context / "model").mkdir()
        (context / "model" / "model.onnx").write_bytes(release.graph)
        (context / RELEASE_FILE).write_text(json.dumps(release.describe(), indent=2))
        package = Path(trustflow.__file__).parent
        shutil.copytree(
            package,
            context / "app" / "trustflow",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "datasets"),
        )
        (context / "requirements.txt").write_text("\n".join(requirements) + "\n")
        wheels = context / "wheels"
        wheels.mkdir()
        (wheels / "README").write_text("Vendored wheels; empty means pip installs from PyPI.\n")
        count = fetch_wheels(context / "requirements.txt", wheels) if vendor else 0
        dockerfile = (infra / "docker" / "Dockerfile").read_text()
        (context / "Dockerfile").write_text(render_dockerfile(dockerfile, build_args(release)))
        (context / ".dockerignore").write_text("**/__pycache__\n")
        files = sum(1 for p in context.rglob("*") if p.is_file())
    return Bundle(path=out, files=files, wheels=count, requirements=requirements)
