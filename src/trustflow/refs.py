"""Small frozen references that tasks pass to each other instead of payloads.

The md5/sha256 in a reference is the content itself, so it is an exact and cheap cache key.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class Ref(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataRef(Ref):
    path: Path
    md5: str
    rows: int


class SplitRefs(Ref):
    train: DataRef
    valid: DataRef
    test: DataRef


class ArtifactRef(Ref):
    """A file produced by a stage (fitted transformer, model, plot), addressed by content."""

    path: Path
    sha256: str
