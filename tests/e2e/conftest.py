"""Fixtures shared by the end-to-end modules."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.e2e.serving import Trained, train_champion


@pytest.fixture(scope="session")
def trained(tmp_path_factory, adult_sample: pd.DataFrame) -> Trained:
    """The served champion: one pipeline run for every serving test (they register versions
    and move the alias only to put it back)."""
    return train_champion(tmp_path_factory.mktemp("serve"), adult_sample)
