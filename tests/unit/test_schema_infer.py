"""`trustflow schema infer`: a schema read off a table, every data-derived part marked, that
loads, validates the table it came from, and keeps privacy from using what it read off it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from flows.cli import main
from trustflow.config import load_config
from trustflow.data.infer import infer_schema
from trustflow.data.sources import load_source
from trustflow.data.validate import validate_frame
from trustflow.errors import ConfigError


@pytest.fixture
def table(adult_sample: pd.DataFrame, tmp_path: Path) -> Path:
    frame = adult_sample.head(1000).copy()
    frame.insert(0, "person_id", [f"p{i:05d}" for i in range(len(frame))])
    path = tmp_path / "census extract.csv"
    frame.to_csv(path, index=False)
    return path


def _infer(table: Path, capsys, *args: str) -> str:
    assert main(["schema", "infer", str(table), "--target", "income", *args]) == 0
    return capsys.readouterr().out


def test_the_inferred_schema_loads_and_validates_its_table(table: Path, capsys, tmp_path) -> None:
    text = _infer(table, capsys, "--sensitive", "sex,race")
    schema_file = tmp_path / "schema.yaml"
    schema_file.write_text(text)
    tree = yaml.safe_load(text)
    assert tree["name"] == "census-extract"
    assert tree["target"] == {"column": "income", "positive": ">50K"}  # the rarer class
    assert tree["sensitive_features"] == ["sex", "race"]
    frame = load_source(f"csv:{table}").frame
    ages = pd.to_numeric(frame["age"])
    assert tree["columns"]["age"] == {
        "kind": "numeric", "bounds": [int(ages.min()), int(ages.max())], "public": False,
    }  # fmt: skip
    assert tree["columns"]["sex"]["categories"][0] == frame["sex"].value_counts().index[0]
    assert "person_id" in tree["ignore"] and "person_id" not in tree["columns"]
    assert "# bounds from the data" in text and "# categories from the data" in text
    assert "1000 distinct values: an identifier or free text?" in text

    cfg = load_config(None, [f"data.dataset={schema_file}", f"data.source=csv:{table}"])
    clean, report = validate_frame(frame, cfg.data.dataset, "drop", str(table))
    assert list(clean.columns) == list(tree["columns"]) and report.rows_out > 900
    assert cfg.registry.model_name == "census-extract"  # named after the data


def test_privacy_refuses_bounds_read_off_the_data_until_confirmed_public(
    table: Path, capsys, tmp_path
) -> None:
    text = _infer(table, capsys, "--sensitive", "sex")
    schema_file = tmp_path / "schema.yaml"
    schema_file.write_text(text)
    private = [f"data.dataset={schema_file}", "privacy.mode=preprocessing"]
    with pytest.raises(ConfigError) as caught:
        load_config(None, private)
    message = str(caught.value)
    assert "needs public bounds and categories" in message and "'age'" in message
    assert "public: true" in message
    schema_file.write_text(text.replace("public: false", "public: true"))
    assert load_config(None, private).privacy.mode == "preprocessing"


def test_columns_keeps_only_those_and_the_rest_are_dropped_on_reading(
    table: Path, capsys, tmp_path
) -> None:
    text = _infer(table, capsys, "--columns", "age,sex,hours_per_week", "--sensitive", "sex")
    tree = yaml.safe_load(text)
    assert list(tree["columns"]) == ["age", "sex", "hours_per_week", "income"]
    assert len(tree["ignore"]) == 16 - 4  # the id column and the 11 Adult columns left out
    schema_file = tmp_path / "schema.yaml"
    schema_file.write_text(text)
    cfg = load_config(None, [f"data.dataset={schema_file}"])
    clean, report = validate_frame(load_source(f"csv:{table}").frame, cfg.data.dataset, "drop", "t")
    assert list(clean.columns) == ["age", "sex", "hours_per_week", "income"]
    assert report.columns_ignored == 12


def test_extra_columns_drop_reads_a_wider_table(adult_sample: pd.DataFrame) -> None:
    schema = load_config().data.dataset
    wider = adult_sample.assign(zip_code="12345", notes="x")
    with pytest.raises(Exception, match=r"unexpected column\(s\) \['zip_code', 'notes'\]"):
        validate_frame(wider, schema, "drop", "w.csv")
    dropping = schema.model_copy(update={"extra_columns": "drop"})
    clean, report = validate_frame(wider, dropping, "drop", "w.csv")
    assert "zip_code" not in clean.columns and report.columns_ignored == 2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--target", "age", "--task", "multiclass"],
            "a multiclass target needs 3 to 50 (a number to predict is --task regression)",
        ),
        (
            ["--target", "sex", "--task", "regression"],
            "a regression target needs two or more, all numbers",
        ),
        (["--target", "income", "--sensitive", "gender"], "no column(s) ['gender']"),
        (
            ["--target", "workclass", "--task", "binary", "--columns", "age"],
            "...); a binary target needs exactly 2",
        ),
    ],
)
def test_bad_requests_are_one_line(table: Path, capsys, args, expected) -> None:
    assert main(["schema", "infer", str(table), *args]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and expected in captured.err
    assert captured.err.strip().count("\n") == 0 and "Traceback" not in captured.err


def test_infer_works_on_a_frame_directly(adult_sample: pd.DataFrame) -> None:
    text = infer_schema(adult_sample, Path("adult.csv"), "income", ("sex",))
    assert yaml.safe_load(text)["name"] == "adult"


def test_a_numeric_sensitive_feature_gets_bins_to_review(table: Path, capsys, tmp_path) -> None:
    text = _infer(table, capsys, "--sensitive", "sex,age")
    age = yaml.safe_load(text)["columns"]["age"]
    assert age["kind"] == "numeric" and len(age["bins"]) == 3 and age["bins"] == sorted(age["bins"])
    assert "bins at its quartiles: choose groups that mean something" in text
    schema_file = tmp_path / "schema.yaml"
    schema_file.write_text(text)
    candidates = "train.candidates=[{name: lr, kind: logistic_regression}]"
    assert load_config(None, [f"data.dataset={schema_file}", candidates]).sensitive_features == (
        "sex",
        "age",
    )


def test_a_target_without_values_is_one_line(adult_sample: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="target 'income' has 0 distinct values"):
        infer_schema(adult_sample.assign(income="?"), Path("x.csv"), "income")


def test_a_target_of_three_classes_is_inferred_as_multiclass(tmp_path, capsys) -> None:
    iris = load_source("bundled:iris").frame
    source = tmp_path / "flowers.csv"
    iris.to_csv(source, index=False)
    assert main(["schema", "infer", str(source), "--target", "species"]) == 0
    text = capsys.readouterr().out
    assert "  task: multiclass\n" in text and "positive" not in text
    schema = tmp_path / "flowers.yaml"
    schema.write_text(text)
    config = load_config(None, [f"data.dataset={schema}"])
    assert config.data.dataset.target_labels == ("setosa", "versicolor", "virginica")
    assert config.registry.model_name == "flowers"
    # Asked for binary, three classes are one line naming the count.
    assert main(["schema", "infer", str(source), "--target", "species", "--task", "binary"]) == 1
    err = capsys.readouterr().err
    assert (
        "target 'species' has 3 distinct values (setosa, versicolor, virginica); a binary "
        "target needs exactly 2"
        in err
        and err.strip().count("\n") == 0
    )


def test_a_numeric_target_of_many_values_is_inferred_as_regression(tmp_path, capsys) -> None:
    source = tmp_path / "clinic.csv"
    load_source("bundled:diabetes").frame.to_csv(source, index=False)
    assert main(["schema", "infer", str(source), "--target", "progression"]) == 0
    text = capsys.readouterr().out
    assert "  task: regression\n" in text and "positive" not in text
    target = yaml.safe_load(text)["columns"]["progression"]
    assert target == {"kind": "numeric", "bounds": [25, 346], "public": False}
    schema = tmp_path / "clinic.yaml"
    schema.write_text(text)
    config = load_config(None, [f"data.dataset={schema}"])
    assert config.data.dataset.target.task == "regression" and config.registry.metric == "rmse"
