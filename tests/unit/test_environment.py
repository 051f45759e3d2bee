"""What a registered version records about the environment that trained it."""

from __future__ import annotations

from importlib import metadata

from trustflow.environment import ci_run_url, current_environment, installed_requirements


def test_requirements_pin_every_installed_distribution_once() -> None:
    lines = installed_requirements().splitlines()
    assert f"pandas=={metadata.version('pandas')}" in lines
    assert len({line.split("==")[0].lower() for line in lines}) == len(lines)


def test_the_ci_run_url_needs_all_of_githubs_run_variables() -> None:
    run = {
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "o/r",
        "GITHUB_RUN_ID": "7",
    }
    assert ci_run_url(run) == "https://github.com/o/r/actions/runs/7"
    assert ci_run_url({**run, "GITHUB_RUN_ATTEMPT": "3"}).endswith("/runs/7/attempts/3")
    assert ci_run_url({k: v for k, v in run.items() if k != "GITHUB_RUN_ID"}) is None
    assert current_environment({}).ci_run_url is None


def test_the_environment_hash_changes_with_any_pin() -> None:
    env = current_environment({})
    changed = env.model_copy(update={"requirements": env.requirements + "extra==1\n"})
    assert len(env.sha256) == 64 and changed.sha256 != env.sha256
