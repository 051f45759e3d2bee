"""Reading .github/workflows/ and running a job's shell steps here, as GitHub's runner runs them:
each `run:` script in bash with -e and pipefail, in the checkout, with the job's and the step's
`env:`. Expressions (`${{ ... }}`) appear only in `env:` (tests/unit/test_workflows.py checks it),
so a test gives each one a value: secrets become local servers, inputs the test's own."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def load(path: Path) -> dict[str, Any]:
    workflow = yaml.safe_load(path.read_text())
    if True in workflow:  # YAML 1.1 reads the key `on` as true
        workflow["on"] = workflow.pop(True)
    return dict(workflow)


def run_steps(workflow: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(job, step) for every step with a shell script, in order."""
    return [
        (job_name, step)
        for job_name, job in workflow["jobs"].items()
        for step in job["steps"]
        if "run" in step
    ]


def expand(text: str, values: dict[str, str]) -> str:
    """``text`` with each expression replaced by its value in ``values``, keyed by the expression's
    text; an expression the test gave no value fails it, naming the expression."""

    def value(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            raise AssertionError(f"no value for the expression `{match.group(1)}` in {text!r}")
        return values[match.group(1)]

    return EXPRESSION.sub(value, text)


@dataclass
class StepResult:
    name: str
    returncode: int
    stdout: str
    stderr: str


def run_job(
    path: Path,
    job: str,
    values: dict[str, str],
    checkout: Path,
    env: dict[str, str],
    timeout: float = 900,
) -> list[StepResult]:
    """Run ``job``'s shell steps in ``checkout`` until one fails; the results of those run."""
    workflow = load(path)
    spec = workflow["jobs"][job]
    job_env = {k: expand(str(v), values) for k, v in spec.get("env", {}).items()}
    results = []
    for step in spec["steps"]:
        if "run" not in step:
            continue  # an action (checkout, setup-python, ...): the test has set up its part
        step_env = {k: expand(str(v), values) for k, v in step.get("env", {}).items()}
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
            cwd=checkout,
            env={**os.environ, **env, **job_env, **step_env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        results.append(StepResult(step.get("name", step["run"]), done.returncode, done.stdout,
                                  done.stderr))  # fmt: skip
        if done.returncode != 0:
            break
    return results
