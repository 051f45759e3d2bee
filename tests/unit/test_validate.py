"""Every validation case: the error names the file, the column and the value."""

import pandas as pd
import pytest

from tests.conftest import set_cell, with_header_row
from trustflow.config import NumericColumn, TabularConfig
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
    "one target class": (
        lambda f: f.assign(income="<=50K"),
        ["target 'income'", "no rows of class(es) ['>50K']"],
    ),
    "duplicated header row": (with_header_row(10), ["row 11 repeats the header row"]),
    "below its bounds": (set_cell("age", 4, "-5"),
                         ["column 'age' has -5 (row 5), outside its bounds [17, 90]",
                          "out_of_bounds: clip"]),
    "infinite": (set_cell("hours_per_week", 2, "inf"), ["'hours_per_week' has 'inf' (row 3)",
                                                        "not a finite number"]),
    "overflowing": (set_cell("fnlwgt", 6, "1e309"), ["'fnlwgt' has '1e309' (row 7)"]),
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


def test_values_past_the_bounds_are_clipped_and_counted_when_the_schema_says_so(
    adult_sample: pd.DataFrame,
) -> None:
    frame = adult_sample.copy()
    frame.loc[[3, 8], "age"] = ["-5", "130"]
    clipping = SCHEMA.model_copy(update={"out_of_bounds": "clip"})
    clean, report = validate_frame(frame, clipping, "impute", "data/in.csv")
    assert report.clipped_by_column == {"age": 2}
    assert clean.loc[3, "age"] == 17 and clean.loc[8, "age"] == 90
    assert clean["age"].between(17, 90).all()


def test_a_huge_value_in_a_column_without_bounds_is_refused(adult_sample: pd.DataFrame) -> None:
    unbounded = SCHEMA.model_copy(update={"columns": {**SCHEMA.columns, "fnlwgt": NumericColumn()}})
    frame = set_cell("fnlwgt", 0, "1e200")(adult_sample)
    with pytest.raises(DataValidationError, match=r"'fnlwgt' has '1e200' \(row 1\)"):
        validate_frame(frame, unbounded, "drop", "x.csv")
    validate_frame(set_cell("fnlwgt", 0, "1e12")(adult_sample), unbounded, "drop", "x.csv")


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (10, "10 rows are too few for the split (split.test_size 0.2, split.valid_size 0.1): "
             "each split needs a row of each of the 2 classes, which takes at least 12 rows"),
        (2000, None),
    ],
)  # fmt: skip
def test_too_few_rows_for_the_split_are_named(rows, expected, adult_sample) -> None:
    from trustflow.config import SplitConfig
    from trustflow.data.split import split_frame, split_problem

    balanced = pd.concat(
        [adult_sample[adult_sample.income == label].head(rows // 2) for label in ("<=50K", ">50K")]
    )
    assert split_problem(balanced["income"], SplitConfig()) == expected
    if expected is None:
        splits = split_frame(balanced, "income", SplitConfig())
        assert min(len(splits.train), len(splits.valid), len(splits.test)) > 0
    else:
        with pytest.raises(DataValidationError, match="too few for the split"):
            split_frame(balanced, "income", SplitConfig())
    one_row = pd.concat([balanced, adult_sample[adult_sample.income == ">50K"].head(0)])
    lonely = one_row.assign(income=["<=50K"] * (len(one_row) - 1) + [">50K"])
    assert split_problem(lonely["income"], SplitConfig()) == (
        "class '>50K' of the target has 1 row(s); each class needs at least 3, one in each split"
    )
