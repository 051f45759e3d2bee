"""`trustflow trigger`: run a deployment on a Prefect server as the UI's Run button does, wait for
its flow run to end, and read back what it left in MLflow. For CI jobs (.github/workflows/
retrain.yml): the exit code says whether the run passed its gates, and the report goes to the job
summary."""

from __future__ import annotations

from typing import Any, cast

import httpx
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL
from pydantic import BaseModel, ConfigDict

from tasks.tracking.reports import PipelineReport, pipeline_report
from tasks.tracking.store import configure
from trustflow.errors import TrustflowError
from trustflow.workspace import Workspace


class Triggered(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    deployment: str
    flow_run_id: str
    flow_run_name: str
    state: str  # the flow run's final state type: COMPLETED, FAILED, CRASHED, CANCELLED
    message: str
    url: str | None  # the flow run in the Prefect UI
    mlflow: PipelineReport | None  # None when the run opened no MLflow run

    @property
    def completed(self) -> bool:
        return self.state == "COMPLETED"


def trigger(
    deployment: str, parameters: dict[str, Any], ws: Workspace, timeout: float, poll: float = 2
) -> Triggered:
    """Create a flow run of ``deployment`` (``FLOW/DEPLOYMENT``, or one name for both, as
    prefect.yaml names them) and wait up to ``timeout`` seconds for it to end."""
    if not PREFECT_API_URL.value():
        raise TrustflowError(
            "PREFECT_API_URL is not set: trigger runs a deployment on a Prefect server "
            "(`trustflow server up` starts one, with a worker)"
        )
    name = deployment if "/" in deployment else f"{deployment}/{deployment}"
    api = PREFECT_API_URL.value()
    try:
        run = cast(
            FlowRun,
            run_deployment(
                name, parameters=parameters, timeout=timeout, poll_interval=poll, as_subflow=False
            ),
        )  # called from sync code: the sync form, not a coroutine
    except ObjectNotFound:
        raise TrustflowError(f"no deployment {name} on {api} (`prefect deploy --all`)") from None
    except PrefectHTTPStatusError as exc:  # parameters the deployment's schema refuses: 409
        detail = exc.response.json().get("detail", exc.response.text)
        raise TrustflowError(f"{name} refused the run: {detail}") from None
    except httpx.TransportError as exc:
        raise TrustflowError(f"cannot reach the Prefect API at {api}: {exc}") from None
    state = run.state
    if state is None or not state.is_final():
        raise TrustflowError(
            f"flow run {run.name} ({run.id}) of {name} did not end in {timeout:.0f} s; it goes on "
            "on its worker"
        )
    ui = PREFECT_UI_URL.value()
    configure(ws)  # MLflow: MLFLOW_TRACKING_URI, else the workspace's store
    return Triggered(
        deployment=name,
        flow_run_id=str(run.id),
        flow_run_name=run.name,
        state=state.type.value,
        message=state.message or "",
        url=f"{ui}/runs/flow-run/{run.id}" if ui else None,
        mlflow=pipeline_report(str(run.id)),
    )


def summary_markdown(done: Triggered) -> str:
    """The run for a CI job summary: outcome, each version's gates, the model cards."""
    link = f"[{done.flow_run_name}]({done.url})" if done.url else done.flow_run_name
    lines = [f"## {done.deployment}: {done.state}", "", f"Flow run {link} (`{done.flow_run_id}`)"]
    if done.message:
        lines += ["", f"> {done.message}"]
    report = done.mlflow
    if report is None:
        return "\n".join([*lines, "", "No MLflow run was opened.", ""])
    lines += ["", f"MLflow run `{report.run_id}` ({report.status})"]
    if report.reason:
        lines += ["", f"Promotion: {report.reason}"]
    if report.versions:
        lines += [
            "",
            "| Version | Candidate | Aliases | Gate | Passed | Verdict |",
            "|---|---|---|---|---|---|",
        ]
        for v in report.versions:
            for gate in v.gates or []:
                verdict = gate.verdict.replace("|", "\\|").replace("\n", " ")
                lines.append(
                    f"| {v.name} v{v.version} | {v.candidate} | {', '.join(v.aliases) or '-'} "
                    f"| {gate.name} | {'yes' if gate.passed else '**no**'} | {verdict} |"
                )
    for path, card in report.model_cards.items():
        lines += ["", f"<details><summary>{path}</summary>", "", card, "", "</details>"]
    return "\n".join([*lines, ""])
