"""Shared fixtures: small real data made from the bundled Adult set (no downloads)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

import tasks  # noqa: F401  (no-telemetry environment before Prefect, MLflow or DVC load)
from trustflow.config import TabularConfig, load_config
from trustflow.data.sources import load_source

# Small candidates so flow tests train in well under a second: as flow parameters, and as an
# override.
FAST_CANDIDATE_LIST = [
    {"name": "logreg", "kind": "logistic_regression", "params": {"C": 1.0}},
    {"name": "hgb", "kind": "hist_gradient_boosting", "params": {"max_iter": 30}},
]
FAST_CANDIDATES = f"train.candidates={json.dumps(FAST_CANDIDATE_LIST, separators=(',', ':'))}"


@pytest.fixture(scope="session")
def adult_raw() -> pd.DataFrame:
    """The bundled data as raw text, exactly as a CSV source would read it."""
    return load_source("bundled:adult").frame


@pytest.fixture(scope="session")
def adult_sample(adult_raw: pd.DataFrame) -> pd.DataFrame:
    """3,000 rows with both classes, in a fixed order."""
    return adult_raw.sample(n=3000, random_state=0).reset_index(drop=True)


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def sample_csv(adult_sample: pd.DataFrame, tmp_path: Path) -> Path:
    return write_csv(adult_sample, tmp_path / "adult-sample.csv")


def set_cell(column: str, row: int, value: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """A data-breaking step: write ``value`` into one cell (row counted from 0)."""

    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame.loc[row, column] = value
        return frame

    return change


def with_header_row(after: int) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """A data-breaking step: repeat the header as a data row after ``after`` rows."""

    def change(frame: pd.DataFrame) -> pd.DataFrame:
        header = pd.DataFrame([list(frame.columns)], columns=frame.columns)
        return pd.concat([frame.iloc[:after], header, frame.iloc[after:]], ignore_index=True)

    return change


# A 3,000-row sample's 600 test rows hold fewer than fairness.min_group_rows = 100 rows of every
# race but White, so race cannot be measured there; a run on the sample allows that.
SMALL_SAMPLE_FAIRNESS = "fairness.unmeasured=allow"
# The CLI arguments of a run on the sample with the small candidates.
SAMPLE_RUN = ("--set", FAST_CANDIDATES, "--set", SMALL_SAMPLE_FAIRNESS)


def small_config(source: Path, *overrides: str) -> TabularConfig:
    return load_config(
        None, [f"data.source=csv:{source}", FAST_CANDIDATES, SMALL_SAMPLE_FAIRNESS, *overrides]
    )


@contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A file system of its own at ``mount`` (a tmpfs of ``size``, e.g. "64m"), for the storage
    faults: a full disk, a read-only mount. Needs root (CI runs as root); skips, saying so,
    otherwise."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; this test runs as root in CI")
    mount.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


def mlflow_payloads(rows: pd.DataFrame) -> dict[str, dict]:
    """The same rows in each of MLflow's JSON request formats (missing cells as null)."""
    records = json.loads(rows.to_json(orient="records"))
    return {
        "dataframe_split": {"dataframe_split": json.loads(rows.to_json(orient="split"))},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs": {"inputs": {name: [r[name] for r in records] for name in rows.columns}},
    }


@pytest.fixture(scope="session")
def trained(tmp_path_factory, adult_sample: pd.DataFrame):
    """A champion registered by one real pipeline run, for every test that serves it (they
    register versions and move the alias only to put it back)."""
    from tests.e2e.serving import train_champion

    return train_champion(tmp_path_factory.mktemp("serve"), adult_sample)


# `make test` runs on two pytest-xdist workers. Each module is one unit of work (its tests stay
# on one worker, in order, and its module fixtures are made once); modules that share an
# expensive session fixture are one unit together. The longest units (servers, faults) go first
# so that the short unit tests fill in at the end.
SHARED_UNITS = {
    "tests/e2e/test_deployments.py": "sqlite-stack",  # tests/e2e/conftest.py: sqlite_stack
    "tests/e2e/test_workflow_steps.py": "sqlite-stack",
}
LONGEST_FIRST = ("tests/e2e/", "tests/faults/", "tests/flows/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def tier(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return next((i for i, p in enumerate(LONGEST_FIRST) if path.startswith(p)), 99)

    items.sort(key=tier)  # stable: a module's tests keep their order


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return SHARED_UNITS.get(module, module)

    return ByModule(config, log)
