"""File helpers: content hashes and atomic writes (nothing half-written is ever left behind)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import joblib
import pandas as pd

from trustflow.refs import ArtifactRef, DataRef


def file_digest(path: Path, algorithm: str = "md5") -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_digest(root: Path, ignore: Collection[str] = ()) -> str:
    """sha256 over every file below ``root`` (relative path and content), in a fixed order: equal
    trees hash equal, and a missing, extra or truncated file changes the hash. Files whose
    relative path is in ``ignore`` are left out."""
    digest = hashlib.sha256()
    files = (p for p in root.rglob("*") if p.is_file())
    for path in sorted(p for p in files if p.relative_to(root).as_posix() not in ignore):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(file_digest(path, "sha256").encode() + b"\n")
    return digest.hexdigest()


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it into place only on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def user_cache() -> Path:
    """trustflow's folder in the user's cache (``$XDG_CACHE_HOME/trustflow``, by default
    ``~/.cache/trustflow``): things that can be made again, such as empty databases."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "trustflow"


def copy_new(source: Path, target: Path) -> bool:
    """Copy ``source`` to ``target`` unless ``target`` exists; whether it copied. The copy is
    made beside ``target`` and linked into place, so a file another process has just made there
    is never replaced."""
    staging = target.with_name(f".{target.name}.copying-{os.getpid()}")
    try:
        shutil.copyfile(source, staging)
        os.link(staging, target)
        return True
    except FileExistsError:
        return False
    finally:
        staging.unlink(missing_ok=True)


def write_frame(frame: pd.DataFrame, target: Path) -> DataRef:
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False)
    return DataRef(path=target, md5=file_digest(target), rows=len(frame))


def write_frame_addressed(frame: pd.DataFrame, directory: Path, stem: str) -> DataRef:
    """Write ``frame`` as ``directory/<stem>-<md5>.parquet`` so a cached ref never goes stale."""
    path, md5 = write_addressed(
        lambda tmp: frame.to_parquet(tmp, index=False), directory, stem, ".parquet", "md5"
    )
    return DataRef(path=path, md5=md5, rows=len(frame))


def read_frame(ref: DataRef) -> pd.DataFrame:
    return pd.read_parquet(ref.path)


def dump_addressed(obj: Any, directory: Path, stem: str) -> ArtifactRef:
    """Pickle ``obj`` with joblib under a name that carries its sha256."""
    path, sha = write_addressed(lambda tmp: joblib.dump(obj, tmp), directory, stem, ".joblib")
    return ArtifactRef(path=path, sha256=sha)


def write_addressed(
    write: Callable[[Path], object],
    directory: Path,
    stem: str,
    suffix: str,
    algorithm: str = "sha256",
) -> tuple[Path, str]:
    """Write through ``write(tmp)``, then rename to ``<stem>-<digest[:16]><suffix>``."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{stem}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        digest = file_digest(tmp_path, algorithm)
        target = directory / f"{stem}-{digest[:16]}{suffix}"
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)
    return target, digest


def load_artifact(ref: ArtifactRef) -> Any:
    return joblib.load(ref.path)


def save_png(figure: Any, directory: Path, stem: str) -> ArtifactRef:
    """A matplotlib figure as a content-addressed PNG (no timestamp, so equal plots hash equal)."""
    path, sha = write_addressed(
        lambda tmp: figure.savefig(tmp, format="png", metadata={"Software": None}),
        directory,
        stem,
        ".png",
    )
    return ArtifactRef(path=path, sha256=sha)


def save_text(text: str, directory: Path, stem: str, suffix: str) -> ArtifactRef:
    path, sha = write_addressed(
        lambda tmp: tmp.write_text(text, encoding="utf-8"), directory, stem, suffix
    )
    return ArtifactRef(path=path, sha256=sha)
