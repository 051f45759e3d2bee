"""Every validation case: the error names the file, the column and the value."""

import pandas as pd
import pytest

from tests.conftest import set_cell, with_header_row
from trustflow.config import TabularConfig
from trustflow.data.validate import validate_frame
from trustflow.errors import DataValidationError

SCHEMA = TabularConfig().data.dataset


# (mutation, fragments the message must contain)
BAD_INPUTS = {
    "missing column": (lambda f: f.drop(columns=["age"]), ["missing column", "'age'"]),
    "extra column": (lambda f: f.assign(zip_code="12345"), ["unexpected column", "'zip_code'"]),
    "wrong type": (set_cell("age", 3, "forty"), ["'age' expects numbers", "'forty'", "row 4"]),
    "unknown category": (set_cell("sex", 7, "Alien"), ["'sex'", "category 'Alien'", "row 8"]),
    "empty data": (lambda f: f.iloc[:0], ["no data rows"]),
    "all-null column": (lambda f: f.assign(occupation="?"), ["column 'occupation'", "all null"]),
    "one target class": (lambda f: f.assign(income="<=50K"), ["target 'income'", "1 class(es)"]),
    "duplicated header row": (with_header_row(10), ["row 11 repeats the header row"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_with_a_precise_message(case: str, adult_sample: pd.DataFrame) -> None:
    mutate, fragments = BAD_INPUTS[case]
    with pytest.raises(DataValidationError) as caught:
        validate_frame(mutate(adult_sample), SCHEMA, "drop", "data/in.csv")
    message = str(caught.value)
    assert message.startswith("data/in.csv: ")
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_missing_values_follow_the_drop_policy(adult_sample: pd.DataFrame) -> None:
    incomplete = int(adult_sample.isin(["?"]).any(axis=1).sum())
    assert incomplete > 0  # the sample holds Adult's "?" cells
    frame, report = validate_frame(adult_sample, SCHEMA, "drop", "x")
    assert report.rows_with_missing == incomplete == report.rows_dropped
    assert len(frame) == 3000 - incomplete and not frame.isna().any().any()
    assert set(report.missing_by_column) == {"workclass", "occupation", "native_country"}


def test_missing_values_follow_the_impute_policy(adult_sample: pd.DataFrame) -> None:
    frame, report = validate_frame(adult_sample, SCHEMA, "impute", "x")
    assert report.rows_dropped == 0 and len(frame) == 3000
    assert frame["occupation"].isna().sum() == report.missing_by_column["occupation"]


def test_rows_without_a_label_are_dropped_under_either_policy(adult_sample: pd.DataFrame) -> None:
    frame, report = validate_frame(set_cell("income", 0, "?")(adult_sample), SCHEMA, "impute", "x")
    assert report.rows_dropped == 1 and len(frame) == 2999


def test_output_is_typed_and_in_schema_order(adult_sample: pd.DataFrame) -> None:
    shuffled = adult_sample[list(reversed(adult_sample.columns))]
    frame, _ = validate_frame(shuffled, SCHEMA, "drop", "x")
    assert list(frame.columns) == list(SCHEMA.columns)
    assert all(frame[c].dtype == "float64" for c in SCHEMA.numeric_features)
