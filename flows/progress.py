"""Stage-level progress, for people (the CLI's display) and for the Prefect UI (run logs)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar, cast

from prefect import Task, get_run_logger
from prefect.futures import PrefectFuture
from prefect.states import State
from rich.console import Console
from rich.table import Table

from flows.interrupts import interrupted

T = TypeVar("T")
P = ParamSpec("P")

# The CLI attaches its display to this logger; records carry ``stage``, ``status`` and ``detail``.
progress_logger = logging.getLogger("trustflow.progress")


def report(stage: str, status: str, detail: str = "") -> None:
    from prefect.runtime import flow_run

    from flows.interrupts import claim_sigterm

    if status == "running":
        claim_sigterm()

    # The flow run's id lets the CLI mark it Cancelled when the run is interrupted.
    fields = {"stage": stage, "status": status, "detail": detail, "flow_run_id": flow_run.id}
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


def same(detail: str) -> str:
    return detail


def describe_ingest(result: Any) -> str:
    staged, origin = result
    return f"{staged.rows:,} rows from {origin}"


def describe_validation(validated: Any) -> str:
    report = validated.report
    clipped = sum(report.clipped_by_column.values())
    return (
        f"{report.rows_out:,} rows kept, {report.rows_dropped:,} dropped "
        f"(missing: {report.missing_policy})"
        + (f", {clipped:,} value(s) clipped to their bounds" if clipped else "")
    )


def describe_budget(config: Any) -> Callable[[str | None], str]:
    privacy = config.privacy
    wanted = privacy.synthetic.epsilon if privacy.mode == "synthetic" else privacy.epsilon
    if privacy.mode == "training":  # and each DP-SGD candidate
        wanted += len(config.candidates) * privacy.training.epsilon

    def describe(digest: str | None) -> str:
        if digest is None:
            return "remote source: checked at release"
        return f"ε {wanted:g} requested of budget {privacy.budget:g}"

    return describe


def describe_private_release(result: Any) -> str:
    summary = result[1]
    spent = (
        "reused (ε 0 spent)"
        if summary.reused
        else f"ε {summary.epsilon_spent:g} spent ({summary.accounting})"
    )
    release = summary.release_id[:8] if summary.release_id else ""
    return f"DP release {release} {spent}, {summary.budget_remaining:g} of {summary.budget:g} left"


def describe_synthetic_copy(result: Any) -> str:
    summary = result[1]
    spent = "reused (ε 0 spent)" if summary.reused else f"ε {summary.epsilon_spent:g} spent"
    worst = max(summary.synthetic_report["one_way_tvd"].values())
    return (
        f"synthetic copy {summary.release_id[:8]} ({result[0].rows:,} rows) {spent}, "
        f"1-way TVD <= {worst:.3f}, {summary.budget_remaining:g} of {summary.budget:g} left"
    )


def describe_training(items: list[Any]) -> str:
    return ", ".join(f"{t.name} {t.fit_seconds:.1f}s" for t in items)


def describe_evaluations(metric: str) -> Callable[[list[Any]], str]:
    def describe(items: list[Any]) -> str:
        return ", ".join(
            f"{e.candidate.name} {metric}={getattr(e.evaluation.metrics, metric):.4f}"
            for e in items
        )

    return describe


def describe_exports(items: list[Any]) -> str:
    return ", ".join(
        f"{e.name} parity {'ok' if e.passed else 'FAILED'}"
        + (f" (max |diff| {e.report.parity.max_abs_diff:.1e})" if e.report else "")
        for e in items
    )


def describe_audits(items: list[Any]) -> str:
    return ", ".join(
        f"{a.name} {'ok' if a.audit.passed else 'FAILED'}"
        + "".join(
            f" {name} EOD {f.equalized_odds_difference:.3f}"
            if f.equalized_odds_difference is not None
            else f" {name} MAE ratio {f.mae_ratio:.3f}"
            for name, f in a.audit.features.items()
            if f.gated and (f.equalized_odds_difference is not None or f.mae_ratio is not None)
        )
        for a in items
    )


def describe_explanations(items: list[Any]) -> str:
    return ", ".join(
        f"{e.explanation.model} ({e.explanation.method}): top "
        f"{e.explanation.importances[0].feature}"
        for e in items
    )


def describe_registration(model_name: str) -> Callable[[tuple[str, bool]], str]:
    def describe(result: tuple[str, bool]) -> str:
        version, new = result
        return f"{model_name} v{version}" + ("" if new else " (identical model, no new version)")

    return describe


def describe_tracked_run(run: Any) -> str:
    """The track stage's line (a tasks.tracking.runs.TrackedRun), with what it closed that a
    crashed run had left open."""
    closed = f" (closed {len(run.reaped)} run(s) a crashed process left open)" if run.reaped else ""
    return f"run {run.run_id}{closed}"


def describe_card(uri: str) -> str:
    return uri.rsplit("/", 2)[-2] + "/" + uri.rsplit("/", 1)[-1]


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

    def _start(self, stage: str, detail: str = "") -> None:
        """A stage begins, unless the run was interrupted: a signal's KeyboardInterrupt that
        landed where Python ignores exceptions (a finalizer, a weakref callback) was swallowed,
        and the run must not go on to register or promote."""
        if interrupted():
            raise KeyboardInterrupt
        self.current = stage
        report(stage, "running", detail)

    def run(
        self, stage: str, task: Task[P, T], detail: Callable[[T], str] = _no_detail
    ) -> Callable[P, T]:
        """``task`` as a stage: calling what this returns runs it in the flow's thread and
        reports its outcome. Typed by the task's own signature (``stages.run("split",
        split_dataset, describe_splits)(data=..., cfg=...)``), so mypy checks every stage call."""

        def call(*args: P.args, **kwargs: P.kwargs) -> T:
            self._start(stage)
            state = cast("State[T]", task(*args, return_state=True, **kwargs))
            result: T = self._note(stage, [state], lambda results: detail(results[0]))[0]
            return result

        return call

    def gather(
        self, stage: str, futures: list[PrefectFuture[T]], detail: Callable[[list[T]], str]
    ) -> list[T]:
        """Wait for tasks submitted to the task runner (they run concurrently)."""
        self._start(stage, f"{len(futures)} concurrent")
        for future in futures:
            future.wait()
        return self._note(stage, [future.state for future in futures], detail)

    def gather_surviving(
        self,
        stage: str,
        waves: Callable[[dict[str, T]], dict[str, PrefectFuture[T]]],
        tolerated: Callable[[BaseException], bool],
        detail: Callable[[list[T]], str],
    ) -> tuple[list[T], dict[str, BaseException]]:
        """Like :meth:`gather`, for tasks that may fail one by one without failing the stage.
        ``waves`` is called with the results so far (first ``{}``) and submits the next wave of
        named tasks, until it submits none (a wave can depend on the one before). A failure
        that ``tolerated`` accepts is returned by name; any other is raised, as in ``gather``."""
        self._start(stage)
        done: dict[str, T] = {}
        states: list[State[T]] = []
        failed: dict[str, BaseException] = {}
        while futures := waves(dict(done)):
            for future in futures.values():
                future.wait()
            for name, future in futures.items():
                state = future.state
                if state.is_completed():
                    states.append(state)
                    done[name] = state.result()
                    continue
                error = state.result(raise_on_failure=False)
                if not (
                    state.is_failed() and isinstance(error, BaseException) and tolerated(error)
                ):
                    state.result()  # raises the stage's own error, as gather does
                failed[name] = error
        if done:
            described = detail(list(done.values()))
            if failed:
                described += f"; {len(failed)} failed: {', '.join(failed)}"
            self._note(stage, states, lambda _: described)
        return list(done.values()), failed


STATUS_MARKS = {"running": "[dim]…[/dim]", "done": "[green]✓[/green]", "cached": "[cyan]↺[/cyan]"}


class StageDisplay(logging.Handler):
    """Prints the stage lines (``report``) for people: one line per stage, when it ends."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        status = getattr(record, "status", "")
        if status == "running":
            return  # one line per stage, printed when it ends
        mark = STATUS_MARKS.get(status, "")
        stage, detail = getattr(record, "stage", ""), getattr(record, "detail", "")
        cached = " [cyan](cached)[/cyan]" if status == "cached" else ""
        self.console.print(f" {mark} [bold]{stage:<10}[/bold] {detail}{cached}", highlight=False)


def _summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title="train-tabular", title_justify="left")
    table.add_column("candidate")
    metrics = list(summary["metrics"])
    for name in metrics:
        table.add_column(name, justify="right")
    for name, values in summary["candidates"].items():
        best = name == summary["model"]["candidate"]
        style = "bold green" if best else None
        table.add_row(
            name + (" *" if best else ""), *(f"{values[m]:.4f}" for m in metrics), style=style
        )
    return table


def show_tabular(summary: dict[str, Any]) -> None:
    """train-tabular's summary for people: the candidates' table, the data, the model."""
    console = Console(highlight=False)
    console.print()
    console.print(_summary_table(summary))
    data, model, tracking = summary["dataset"], summary["model"], summary["mlflow"]
    alias = f" @{model['alias']}" if model["alias"] else ""
    console.print(
        f"dataset  {data['name']}  md5 {data['md5']}  {data['rows']:,} rows  ({data['dvc_file']})"
    )
    console.print(f"model    {model['name']} v{model['version']}{alias}  ({model['reason']})")
    for reason in summary.get("failed", {}).values():
        console.print(f"failed   {reason}", soft_wrap=True)
    for note in summary.get("notes", []):
        console.print(f"note     {note}", soft_wrap=True)
    linear = summary.get("encryption")
    if linear:
        held = f" @{linear['alias']}" if linear["alias"] else ""
        console.print(
            f"linear   {linear['name']} v{linear['version']}{held}  ({linear['reason']})",
            soft_wrap=True,
        )
    console.print(f"mlflow   {tracking['tracking_uri']}  run {tracking['run_id']}")


def show_digits(summary: dict[str, Any]) -> None:
    """train-digits' summary for people."""
    model, training, metrics = summary["model"], summary["training"], summary["metrics"]
    alias = f" @{model['alias']}" if model["alias"] else ""
    print()
    print(
        f"test     accuracy {metrics['accuracy']:.4f}  macro F1 {metrics['macro_f1']:.4f}  "
        f"log loss {metrics['log_loss']:.4f}"
    )
    print(
        f"training {training['epochs']} epochs (best {training['best_epoch']}) in "
        f"{training['fit_seconds']:.1f} s on {training['device']}"
    )
    print(f"onnx     max |diff| {summary['onnx']['max_abs_diff']:.1e} (parity passed)")
    print(f"model    {model['name']} v{model['version']}{alias}  ({model['reason']})")
    print(f"mlflow   {summary['mlflow']['tracking_uri']}  run {summary['mlflow']['run_id']}")
