"""Cache keys: the task's inputs (references carry content hashes), its own source, and the
source of the core library it calls, so editing a core function invalidates what it produced."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy, Inputs
from prefect.context import TaskRunContext

import trustflow


@cache
def core_source_digest() -> str:
    digest = hashlib.sha256()
    for root in (Path(trustflow.__file__).parent, Path(__file__).parent):
        for path in sorted(root.rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


class CoreSource(CachePolicy):
    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        return core_source_digest()


# Inputs + task source + core source. Tasks that read mutable sources do not use it.
CONTENT_CACHE = INPUTS + TASK_SOURCE + CoreSource()


def content_cache_except(*names: str) -> CachePolicy:
    """CONTENT_CACHE, less inputs that do not change the result (where to record it)."""
    return Inputs(exclude=list(names)) + TASK_SOURCE + CoreSource()
