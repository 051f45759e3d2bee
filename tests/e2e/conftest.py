from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.processes import deployed_stack


@pytest.fixture(scope="session")
def sqlite_stack(tmp_path_factory) -> Iterator[dict[str, str]]:
    """One deployed stack on SQLite (`trustflow server up`, `prefect deploy --all`) for every e2e
    module that needs one: starting one takes about 40 s. Tests on it use their own data."""
    with deployed_stack(tmp_path_factory.mktemp("stack-ws")) as urls:
        yield urls
