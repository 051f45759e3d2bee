"""Data tasks: ingest -> validate -> version (DVC) -> split.

Ingest, validate and version read a source that can change under the same name, so they always
run (about a second on Adult). Everything after them is cached on the content md5 they produce.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from tasks.caching import CONTENT_CACHE
from trustflow.config import DataConfig, SplitConfig
from trustflow.data.sources import load_source
from trustflow.data.split import split_frame, split_problem
from trustflow.data.validate import ValidationReport, validate_frame
from trustflow.errors import DataSourceError, DataValidationError
from trustflow.io import file_digest, read_frame, write_frame, write_frame_addressed
from trustflow.refs import DataRef, SplitRefs
from trustflow.workspace import Workspace


class ValidatedData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    data: DataRef
    report: ValidationReport
    origin: str


class Lineage(BaseModel):
    """Where a data version lives: enough to `dvc pull` it back."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: DataRef
    dvc_file: str  # relative to the workspace
    remote: str
    git_revision: str | None  # HEAD of the workspace's git repository, if it is one
    origin: str


@task(name="ingest", cache_policy=NO_CACHE, persist_result=False)
def ingest_dataset(cfg: DataConfig, ws: Workspace) -> tuple[DataRef, str]:
    """Read the source as it is now into a staging file inside the workspace."""
    loaded = load_source(cfg.source, ws.state_dir / "openml", cfg.encoding)
    staged = write_frame_addressed(loaded.frame, ws.staging_dir, cfg.dataset.name)
    return staged, loaded.origin


@task(name="validate", cache_policy=NO_CACHE, persist_result=False)
def validate_dataset(
    staged: DataRef, origin: str, cfg: DataConfig, split: SplitConfig, ws: Workspace
) -> ValidatedData:
    """Schema check, and enough rows of each class for the split: only data that passes both
    reaches ``data/<name>.parquet`` (the versioned data). The staging file is removed either
    way, so a refused data set leaves nothing behind."""
    try:
        clean, report = validate_frame(read_frame(staged), cfg.dataset, cfg.missing, origin)
        schema = cfg.dataset
        problem = split_problem(clean[schema.target.column], split, schema.classification)
        if problem:
            raise DataValidationError(f"{origin}: {problem}")
        data = write_frame(clean, ws.data_dir / f"{cfg.dataset.name}.parquet")
    finally:
        staged.path.unlink(missing_ok=True)
    return ValidatedData(data=data, report=report, origin=origin)


def _git_toplevel(path: Path) -> Path | None:
    done = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=path, capture_output=True, text=True
    )
    return Path(done.stdout.strip()).resolve() if done.returncode == 0 else None


def _git_revision(path: Path) -> str | None:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def open_dvc_repo(root: Path) -> Any:  # dvc.repo.Repo (imported lazily: DVC is slow to import)
    """Open the workspace's DVC repository, creating it on first use."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    logging.getLogger("dvc").setLevel(logging.WARNING)  # "Initialized DVC repository." etc.
    torn = False
    if (root / ".dvc").is_dir():
        try:
            return Repo(str(root))
        except DvcException:  # SCMError too
            # A repository DVC cannot open and that caches nothing is an init cut short (a
            # full disk, a kill): made again. One with data in its cache is never touched.
            cache = root / ".dvc" / "cache"
            if cache.is_dir() and any(cache.iterdir()):
                raise
            torn = True
    toplevel = _git_toplevel(root)
    Repo.init(
        str(root),
        no_scm=toplevel is None,
        subdir=toplevel is not None and toplevel != root,
        force=torn,
    )
    return Repo(str(root))


def _remote_url(url: str, root: Path) -> str:  # a RelPath (a str) inside the workspace
    """A remote inside the workspace is written relative to ``.dvc/`` (DVC's RelPath), so a
    copied or moved workspace pushes into its own remote, not the original's."""
    from dvc.config_schema import RelPath

    path = Path(url)
    return RelPath(str(path)) if path.is_absolute() and path.is_relative_to(root) else url


def ensure_remote(repo: Any, url: str) -> str:
    """Make ``url`` the default remote unless the repository already names one."""
    with repo.config.edit("local") as local:
        configured = repo.config["core"].get("remote")
        if configured:
            return str(repo.config["remote"][configured]["url"])
        local["remote"]["workspace"] = {"url": _remote_url(url, Path(repo.root_dir))}
        local["core"]["remote"] = "workspace"
    return url


def relocate_dvc_remotes(root: Path, previous: Path) -> int:
    """After a copy or move from ``previous``: remotes that pointed inside the old place point
    to the same place inside this one (relative from now on). How many were repointed."""
    if not (root / ".dvc").is_dir():
        return 0
    repo = open_dvc_repo(root)
    moved = 0
    try:
        with repo.config.edit("local") as local:
            for remote in local.get("remote", {}).values():
                url = Path(str(remote.get("url", "")))
                if url.is_absolute() and url.is_relative_to(previous):
                    remote["url"] = _remote_url(str(root / url.relative_to(previous)), root)
                    moved += 1
    finally:
        repo.close()
    return moved


@task(name="version", cache_policy=NO_CACHE, persist_result=False)
def version_dataset(data: DataRef, origin: str, remote_url: str | None, ws: Workspace) -> Lineage:
    """``dvc add`` the validated data and push it to the remote; idempotent for unchanged data."""
    repo = open_dvc_repo(ws.root)
    try:
        remote = ensure_remote(repo, remote_url or str(ws.default_remote))
        target = str(data.path)  # absolute: DVC resolves relative paths against the cwd
        repo.add(target)
        repo.push(targets=[target])
    finally:
        repo.close()
    dvc_file = data.path.with_name(data.path.name + ".dvc")
    recorded = yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]
    if recorded != data.md5 or file_digest(data.path) != data.md5:
        raise DataSourceError(
            f"{data.path} changed while it was being versioned (expected md5 {data.md5})"
        )
    return Lineage(
        data=data,
        dvc_file=str(dvc_file.relative_to(ws.root)),
        remote=remote,
        git_revision=_git_revision(ws.root),
        origin=origin,
    )


@task(name="split", cache_policy=CONTENT_CACHE, persist_result=True)
def split_dataset(
    data: DataRef, cfg: SplitConfig, target: str, ws: Workspace, stratify: bool = True
) -> SplitRefs:
    """``stratify``: on a class target (not on a number to regress on)."""
    splits = split_frame(read_frame(data), target, cfg, stratify)
    out = ws.artifacts_dir / "splits"
    return SplitRefs(
        train=write_frame_addressed(splits.train, out, "train"),
        valid=write_frame_addressed(splits.valid, out, "valid"),
        test=write_frame_addressed(splits.test, out, "test"),
    )
