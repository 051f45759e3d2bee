"""Stage-level progress, for people (the CLI's display) and for the Prefect UI (run logs)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from prefect import Task, get_run_logger
from prefect.futures import PrefectFuture
from prefect.states import State

T = TypeVar("T")

# The CLI attaches its display to this logger; records carry ``stage``, ``status`` and ``detail``.
progress_logger = logging.getLogger("trustflow.progress")


def report(stage: str, status: str, detail: str = "") -> None:
    fields = {"stage": stage, "status": status, "detail": detail}
    progress_logger.info("%s %s %s", stage, status, detail, extra=fields)
    get_run_logger().info("%s: %s %s", stage, status, detail)


def _no_detail(_: Any) -> str:
    return ""


def describe_lineage(lineage: Any) -> str:
    """The version stage's line (a tasks.data.Lineage)."""
    return f"md5 {lineage.data.md5[:12]} -> {lineage.remote}"


def describe_splits(splits: Any) -> str:
    """The split stage's line (a trustflow.refs.SplitRefs)."""
    return f"train/valid/test {splits.train.rows:,}/{splits.valid.rows:,}/{splits.test.rows:,}"


class StageLog:
    """Runs stages, reports them, and records which ones came from Prefect's cache."""

    def __init__(self) -> None:
        self.cached: dict[str, bool] = {}
        self.current = ""  # the stage last started, for errors that happen between tasks

    def _note(
        self, stage: str, states: Sequence[State[Any]], detail: Callable[[list[Any]], str]
    ) -> list[Any]:
        results = [state.result() for state in states]  # raises the stage's own error on failure
        hit = all(state.name == "Cached" for state in states)
        self.cached[stage] = hit
        report(stage, "cached" if hit else "done", detail(results))
        return results

    def run(
        self,
        stage: str,
        task: Task[..., T],
        *args: Any,
        detail: Callable[[T], str] = _no_detail,
    ) -> T:
        """Call ``task`` in the flow's thread and report its outcome."""
        self.current = stage
        report(stage, "running")
        state = cast("State[T]", task(*args, return_state=True))
        result: T = self._note(stage, [state], lambda results: detail(results[0]))[0]
        return result

    def gather(
        self, stage: str, futures: list[PrefectFuture[T]], detail: Callable[[list[T]], str]
    ) -> list[T]:
        """Wait for tasks submitted to the task runner (they run concurrently)."""
        self.current = stage
        report(stage, "running", f"{len(futures)} concurrent")
        for future in futures:
            future.wait()
        return self._note(stage, [future.state for future in futures], detail)
