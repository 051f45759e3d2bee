"""The GitHub Actions workflows are valid and thin, and the pre-commit hooks work. actionlint
passes on each workflow; every shell step calls a make target, the CLI or a .ci script (so it can
be run locally, step by step), takes `${{ }}` expressions only through `env:` (no script
injection), and names only make targets and CLI options that exist.
tests/e2e/test_workflow_steps.py runs the retrain job's steps."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import _parser
from tests.github_actions import REPO, WORKFLOWS, load, run_steps

ACTIONLINT = Path(sys.executable).parent / "actionlint"
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml"))
MAKE_TARGETS = set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), re.M))


def test_the_three_workflows_are_there() -> None:
    assert [p.name for p in WORKFLOW_FILES] == ["ci.yml", "release.yml", "retrain.yml"]


def test_actionlint_passes_on_every_workflow() -> None:
    assert ACTIONLINT.is_file(), "actionlint is a dev dependency: make install"
    linted = subprocess.run(
        [str(ACTIONLINT), "-no-color", *map(str, WORKFLOW_FILES)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert linted.returncode == 0, linted.stdout + linted.stderr


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_every_shell_step_is_thin_and_takes_expressions_only_through_env(path: Path) -> None:
    for job, step in run_steps(load(path)):
        script = step["run"]
        assert "${{" not in script, f"{path.name} {job}: put the expression in env: {script!r}"
        assert re.search(r"(^|\s)(make \w|\.venv/bin/trustflow |\.ci/)", script), (
            f"{path.name} {job}: a step should call make, the CLI or .ci/: {script!r}"
        )


def _commands(script: str) -> list[list[str]]:
    """Each command line of a shell script, continuation lines joined, split as the shell would
    (variables left as written)."""
    lines = script.replace("\\\n", " ").splitlines()
    return [shlex.split(line) for line in lines if line.strip()]


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_the_make_targets_and_cli_options_the_steps_use_exist(path: Path) -> None:
    parser = _parser()
    checked = 0
    for _job, step in run_steps(load(path)):
        for words in _commands(step["run"]):
            if words[0] == "make":
                assert set(words[1:]) <= MAKE_TARGETS, f"{path.name}: no such target in {words}"
                checked += 1
            elif words[0] == ".venv/bin/trustflow":
                # "${args[@]}" (a bash array of further options) is not a literal option
                argv = words[1 : words.index(">")] if ">" in words else words[1:]
                argv = [w for w in argv if not w.startswith("${")]
                # a variable's value is known only on the runner: a number fits every option
                argv = ["1" if re.fullmatch(r"\$\w+", w) else w for w in argv]
                try:
                    parser.parse_args(argv)
                except SystemExit:
                    pytest.fail(f"{path.name}: the CLI refuses {shlex.join(argv)}")
                checked += 1
    assert checked, f"{path.name} calls neither make nor the CLI"


def test_ci_yml_runs_what_ci_run_runs() -> None:
    """One way to run CI: the full job's steps are .ci/run's commands."""
    ci_run = [
        line
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line and not line.startswith(("#", "set ", "cd "))
    ]
    full = [step["run"] for job, step in run_steps(load(WORKFLOWS / "ci.yml")) if job == "full"]
    assert full == ci_run


def test_the_pre_commit_hook_refuses_a_broken_workflow(tmp_path: Path) -> None:
    """.pre-commit-config.yaml's actionlint hook, run by pre-commit in a repository of its own."""
    shutil.copy(REPO / ".pre-commit-config.yaml", tmp_path)
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
    workflow = tmp_path / ".github" / "workflows" / "build.yml"
    workflow.parent.mkdir(parents=True)
    job = "    runs-on: ubuntu-24.04\n    steps:\n      - run: make test\n"
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "cache")}

    def hook(text: str) -> subprocess.CompletedProcess[str]:
        workflow.write_text(text)
        subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
        return subprocess.run(
            [str(Path(sys.executable).parent / "pre-commit"), "run", "actionlint", "--all-files"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    broken = hook("on: push\njobs:\n  build:\n    needs: lint\n" + job)  # no job lint
    assert broken.returncode == 1 and "build.yml" in broken.stdout, broken.stdout
    fixed = hook("on: push\njobs:\n  build:\n" + job)
    assert fixed.returncode == 0, fixed.stdout
