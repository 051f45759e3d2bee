"""Fixtures the unit tests share."""

from __future__ import annotations

import pandas as pd
import pytest

from trustflow.config import TabularConfig
from trustflow.data.split import split_frame
from trustflow.data.validate import validate_frame
from trustflow.models.preprocess import features_and_target, fit_preprocessor


@pytest.fixture(scope="module")
def adult(adult_sample: pd.DataFrame):
    """The Adult sample, split: (fitted preprocessor, train, valid, test), each split as
    (features, target)."""
    schema = TabularConfig().data.dataset
    frame, _ = validate_frame(adult_sample, schema, "drop", "sample")
    parts = split_frame(frame, schema.target.column, TabularConfig().split)
    pre = fit_preprocessor(parts.train, schema)
    train = features_and_target(parts.train, schema)
    valid = features_and_target(parts.valid, schema)
    test = features_and_target(parts.test, schema)
    return pre, train, valid, test
