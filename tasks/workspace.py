"""The workspace stage: a workspace copied or moved from another path takes over its stores.

MLflow's SQLite store and DVC's local config record absolute paths (artifact locations, the
remote). Left alone, a copy would keep writing model files, model cards and data versions into
the original's folders. Before anything is written, this stage repoints every path under the
old root to the same path under the new one.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.data import relocate_dvc_remotes
from tasks.tracking.store import relocate_store
from trustflow.workspace import Workspace


@task(name="workspace", cache_policy=NO_CACHE, persist_result=False)
def adopt_workspace(ws: Workspace) -> str:
    """Record where the workspace is; when it was elsewhere before, repoint its stores."""
    previous = ws.recorded_root()
    detail = str(ws.root)
    if previous is not None and previous != ws.root:
        rows = relocate_store(ws, previous)
        remotes = relocate_dvc_remotes(ws.root, previous)
        detail = (
            f"moved from {previous}: {rows} MLflow records and {remotes} DVC remote(s) "
            "repointed here"
        )
    ws.record_root()
    return detail
