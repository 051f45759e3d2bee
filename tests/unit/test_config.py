from pathlib import Path

import pytest

from trustflow.config import DatasetSchema, DigitsConfig, TabularConfig, load_config
from trustflow.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_configs_file_matches_built_in_defaults() -> None:
    assert load_config(REPO / "configs" / "tabular.yaml") == TabularConfig()
    assert load_config(REPO / "configs" / "digits.yaml", kind=DigitsConfig) == DigitsConfig()


def test_digits_compare_on_a_multiclass_metric() -> None:
    with pytest.raises(ConfigError, match="ten classes are compared on accuracy or log_loss"):
        load_config(None, ["registry.metric=roc_auc"], DigitsConfig)


def test_default_schema_is_the_bundled_adult_contract() -> None:
    schema = TabularConfig().data.dataset
    assert schema.target.column == "income" and schema.target.positive == ">50K"
    assert schema.sensitive_features == ("sex", "race")
    assert schema.target_labels == ("<=50K", ">50K")
    assert len(schema.feature_columns) == 14
    assert all(schema.columns[c].bounds for c in schema.numeric_features)  # type: ignore[union-attr]


def test_set_overrides_nested_values_with_yaml_types() -> None:
    cfg = load_config(None, ["train.seed=7", "split.test_size=0.25", "data.missing=impute"])
    assert cfg.train.seed == 7 and cfg.split.test_size == 0.25 and cfg.data.missing == "impute"


def test_set_can_replace_the_candidate_list() -> None:
    cfg = load_config(None, ["train.candidates=[{name: lr, kind: logistic_regression}]"])
    assert [c.name for c in cfg.train.candidates] == ["lr"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.bogus=1", "train.bogus"),
        ("split.test_size=1.5", "split.test_size"),
        ("registry.metric=precision", "registry.metric"),
        ("data.missing=guess", "data.missing"),
        ("train.candidates=[{name: a, kind: svm}]", "train.candidates"),
        ("seed", "key=value"),
    ],
)
def test_bad_overrides_name_the_key(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        load_config(None, [override])


def test_duplicate_candidate_names_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"repeated: \['a'\]"):
        load_config(None, ["train.candidates=[{name: a, kind: logistic_regression}, "
                           "{name: a, kind: hist_gradient_boosting}]"])  # fmt: skip


def test_unreadable_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match=r"bad\.yaml is not valid YAML"):
        load_config(bad)


def test_schema_target_must_have_two_categories() -> None:
    with pytest.raises(ValueError, match="exactly two categories"):
        DatasetSchema.model_validate(
            {
                "name": "x",
                "columns": {"y": {"kind": "categorical", "categories": ["a", "b", "c"]}},
                "target": {"column": "y", "positive": "a"},
            }
        )


def test_schema_sensitive_feature_must_exist() -> None:
    with pytest.raises(ValueError, match="sensitive feature 'gender'"):
        DatasetSchema.model_validate(
            {
                "name": "x",
                "columns": {"y": {"kind": "categorical", "categories": ["a", "b"]}},
                "target": {"column": "y", "positive": "a"},
                "sensitive_features": ["gender"],
            }
        )


def test_schema_reference_to_a_file(tmp_path: Path) -> None:
    schema = tmp_path / "schema.yaml"
    schema.write_text(
        "name: toy\ncolumns:\n  x: {kind: numeric, bounds: [0, 1]}\n"
        "  y: {kind: categorical, categories: ['no', 'yes']}\n"
        "target: {column: y, positive: 'yes'}\n"
    )
    # The default candidates mitigate Adult's 'sex'; a data set without it says so.
    with pytest.raises(ConfigError, match="data set 'toy' declares no sensitive_features"):
        load_config(None, [f"data.dataset={schema}"])
    cfg = load_config(
        None, [f"data.dataset={schema}", "train.candidates=[{name: lr, kind: logistic_regression}]"]
    )
    assert cfg.data.dataset.name == "toy" and cfg.data.dataset.numeric_features == ["x"]
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_config(None, [f"data.dataset={tmp_path / 'nope.yaml'}"])


def test_setting_one_key_keeps_the_pipelines_own_defaults_for_the_rest() -> None:
    """train-digits registers digits-cnn on accuracy: naming another model keeps the metric."""
    config = load_config(None, ["registry.model_name=digits-0to4"], DigitsConfig)
    assert config.registry.model_name == "digits-0to4"
    assert config.registry.metric == "accuracy" == DigitsConfig().registry.metric
    assert config.tracking.experiment == "train-digits"
    tabular = load_config(None, ["registry.model_name=credit"])
    assert tabular.registry.metric == "roc_auc"
