from collections.abc import Iterator

import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server (own SQLite DB) for all flow tests."""
    with prefect_test_harness(server_startup_timeout=60):
        yield
