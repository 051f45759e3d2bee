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
    bad.write_text("data:\n  source: csv:x.csv\n   missing: drop\n")
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    message = str(caught.value)  # one line: the file, where, and what
    assert message.startswith(f"config file {bad} is not valid YAML, line 3, column 11: ")
    assert "\n" not in message


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
    # The default candidates mitigate Adult's 'sex': on a data set without it that mitigation
    # is left out, saying why, and so is the fairness audit.
    defaults = load_config(None, [f"data.dataset={schema}"])
    assert [c.name for c in defaults.candidates] == ["logreg", "hgb", "ebm", "mlp"]
    assert defaults.notes == [
        "candidate 'hgb-fair' left out: its sensitive feature 'sex' is not a column of data set "
        "'toy'",
        "no fairness audit: data set 'toy' declares no sensitive feature and fairness.features "
        "is not set",
    ]
    cfg = load_config(
        None, [f"data.dataset={schema}", "train.candidates=[{name: lr, kind: logistic_regression}]"]
    )
    assert cfg.data.dataset.name == "toy" and cfg.data.dataset.numeric_features == ["x"]
    # Named after the data, not adult-income; an explicit name still wins.
    assert cfg.registry.model_name == "toy" and cfg.tracking.experiment == "toy"
    one = "train.candidates=[{name: lr, kind: logistic_regression}]"
    named = load_config(None, [f"data.dataset={schema}", "registry.model_name=m", one])
    assert named.registry.model_name == "m" and named.tracking.experiment == "m"
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


def test_the_bundled_data_keeps_its_model_name() -> None:
    cfg = TabularConfig()
    assert cfg.registry.model_name == "adult-income" == cfg.tracking.experiment


def test_set_reaches_into_lists_by_entry_name_or_index() -> None:
    cfg = load_config(None, ["train.candidates.hgb-fair.params.sensitive_feature=race",
                             "train.candidates.0.params.C=0.5"])  # fmt: skip
    by_name = {c.name: c for c in cfg.train.candidates}
    assert by_name["hgb-fair"].params["sensitive_feature"] == "race"
    assert by_name["hgb-fair"].params["base"] == "hgb"  # the rest of the entry is kept
    assert by_name["logreg"].params == {"C": 0.5}
    assert list(by_name) == [c.name for c in TabularConfig().train.candidates]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.candidates.svm.params.C=1",
         "--set train.candidates.svm.params.C: no entry named 'svm' (entries: logreg, hgb,"),
        ("train.candidates.9.kind=mlp", "--set train.candidates.9.kind: index 9 is past the 5"),
        ("train.candidates.hgb.params.max_iters=3", "unknown param 'max_iters'"),
    ],
)  # fmt: skip
def test_bad_list_overrides_name_the_entry(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.").replace("(", r"\(")):
        load_config(None, [override])


def test_an_empty_source_path_says_so() -> None:
    from trustflow.data.sources import load_source
    from trustflow.errors import DataSourceError

    spec = load_config(None, ["data.source=csv:"]).data.source  # a string, not a YAML mapping
    with pytest.raises(DataSourceError, match=r"data source 'csv:': the path is missing"):
        load_source(spec)


def test_set_reaches_an_entry_the_config_file_names(tmp_path: Path) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text("train:\n  candidates:\n    - {name: lr, kind: logistic_regression}\n")
    cfg = load_config(config, ["train.candidates.lr.params.C=0.25"])
    assert [(c.name, c.params) for c in cfg.train.candidates] == [("lr", {"C": 0.25})]


def test_candidates_narrows_the_list_by_name_after_the_overrides() -> None:
    config = load_config(None, ["train.candidates.hgb.params.max_iter=30"],
                         candidates=["hgb", "logreg"])  # fmt: skip
    assert [c.name for c in config.candidates] == ["logreg", "hgb"]  # the list's own order
    assert config.candidates[1].params["max_iter"] == 30
    with pytest.raises(ConfigError, match=r"needs params\.base naming one of the other "
                       r"candidates \['logreg'\], got 'hgb'"):  # fmt: skip
        load_config(None, [], candidates=["logreg", "hgb-fair"])
    with pytest.raises(ConfigError) as caught:
        load_config(None, [], candidates=["logreg", "svm"])
    assert str(caught.value) == (
        "--candidates: no candidate named 'svm'; train.candidates has logreg, hgb, ebm, "
        "hgb-fair, mlp"
    )
    with pytest.raises(ConfigError, match=r"this pipeline has no train\.candidates"):
        load_config(None, [], DigitsConfig, candidates=["cnn"])
