"""The fairness audit and gate on real predictions: metrics equal Fairlearn's own definitions,
small and one-class groups are reported instead of divided by zero, and violations name the
metric, feature, groups, value and limit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
)

from trustflow.config import FairnessConfig, load_config
from trustflow.errors import ConfigError
from trustflow.fairness import audit_figure, audit_predictions, fairness_table

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def predictions() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """A logistic regression's test-split labels on 3,000 rows of Adult."""
    from sklearn.model_selection import train_test_split

    from trustflow.config import TabularConfig
    from trustflow.data.sources import load_source
    from trustflow.data.validate import validate_frame
    from trustflow.models.candidates import train_candidate
    from trustflow.models.preprocess import features_and_target, fit_preprocessor

    config = TabularConfig()
    schema = config.data.dataset
    raw = load_source("bundled:adult").frame.sample(n=3000, random_state=1)
    frame, _ = validate_frame(raw, schema, "drop", "sample")
    train, test = train_test_split(frame, test_size=0.4, random_state=0)
    features, target = features_and_target(train, schema)
    model = train_candidate(
        fit_preprocessor(train, schema), features, target, config.train.candidates[0], seed=0
    )
    test_features, test_target = features_and_target(test, schema)
    return test_features, test_target, model.predict(test_features)


def test_disparities_equal_fairlearns_when_every_group_is_measured(predictions) -> None:
    features, target, predicted = predictions
    cfg = FairnessConfig(min_group_rows=1, max_equalized_odds_difference=None)
    audit = audit_predictions("logreg", features, target, predicted, ("sex",), cfg)
    sex = audit.features["sex"]
    groups = features["sex"]
    assert sex.equalized_odds_difference == pytest.approx(
        equalized_odds_difference(target, predicted, sensitive_features=groups)
    )
    assert sex.demographic_parity_difference == pytest.approx(
        demographic_parity_difference(target, predicted, sensitive_features=groups)
    )
    assert sex.demographic_parity_ratio == pytest.approx(
        demographic_parity_ratio(target, predicted, sensitive_features=groups)
    )
    assert {g.group for g in sex.groups} == {"Female", "Male"}
    assert sum(g.count for g in sex.groups) == len(features)
    assert audit.passed and "sex & race" not in audit.features  # one feature: no intersection


def test_small_groups_are_listed_but_left_out_of_the_metrics(predictions) -> None:
    features, target, predicted = predictions
    cfg = FairnessConfig(min_group_rows=100, max_equalized_odds_difference=None)
    race = audit_predictions("logreg", features, target, predicted, ("race",), cfg).features["race"]
    small = [g for g in race.groups if g.count < 100]
    assert small and all(
        not g.measured and "< fairness.min_group_rows = 100" in g.note for g in small
    )
    measured = [g for g in race.groups if g.measured]
    rates = [g.selection_rate for g in measured]
    assert race.demographic_parity_difference == pytest.approx(max(rates) - min(rates))
    assert any(f"race = {small[0].group}: not measured" in w for w in race.warnings)


def test_a_group_without_positive_rows_has_no_tpr_and_is_not_measured() -> None:
    frame = pd.DataFrame({"sex": ["Female"] * 50 + ["Male"] * 50})
    target = np.r_[np.zeros(50, dtype=int), RNG.integers(0, 2, 50)]
    predicted = RNG.integers(0, 2, 100)
    cfg = FairnessConfig(min_group_rows=10)
    sex = audit_predictions("m", frame, target, predicted, ("sex",), cfg).features["sex"]
    female = next(g for g in sex.groups if g.group == "Female")
    assert female.tpr is None and female.note == "no positive rows" and not female.measured
    assert sex.equalized_odds_difference is None
    assert any("fewer than two groups" in w for w in sex.warnings)


def test_a_gated_feature_that_cannot_be_measured_fails_unless_allowed() -> None:
    """One Female row: no disparity can be measured, so no limit can be said to be met."""
    frame = pd.DataFrame({"sex": ["Female"] + ["Male"] * 199})
    target, predicted = RNG.integers(0, 2, 200), RNG.integers(0, 2, 200)
    cfg = FairnessConfig(min_group_rows=10)
    audit = audit_predictions("m", frame, target, predicted, ("sex",), cfg)
    assert not audit.passed
    assert audit.reason().startswith("sex not measured: fewer than two groups with at least 10")
    assert "Female 1, Male 199" in audit.reason() and "fairness.unmeasured=allow" in audit.reason()
    allowed = FairnessConfig(min_group_rows=10, unmeasured="allow")
    audit = audit_predictions("m", frame, target, predicted, ("sex",), allowed)
    assert audit.passed and audit.reason() == "fairness limits met"
    assert any("fewer than two groups" in w for w in audit.warnings)
    no_limits = FairnessConfig(min_group_rows=10, max_equalized_odds_difference=None)
    assert audit_predictions("m", frame, target, predicted, ("sex",), no_limits).passed


def test_a_broken_limit_names_metric_feature_groups_value_and_limit(predictions) -> None:
    features, target, predicted = predictions
    cfg = FairnessConfig(min_group_rows=30, max_equalized_odds_difference=0.0)
    audit = audit_predictions("logreg", features, target, predicted, ("sex", "race"), cfg)
    assert not audit.passed
    value = audit.features["sex"].equalized_odds_difference
    reason = audit.reason()
    assert reason.startswith("equalized_odds_difference for ")
    assert "exceeds fairness.max_equalized_odds_difference = 0" in reason
    assert " vs " in reason and "(and " in reason  # the groups, and the other violations
    sex = next(v for v in audit.violations if v.feature == "sex")
    assert sex.value == value and {sex.gap.high_group, sex.gap.low_group} == {"Female", "Male"}


def test_the_intersection_is_reported_unless_configured_to_gate(predictions) -> None:
    features, target, predicted = predictions
    limits = {"min_group_rows": 30, "max_equalized_odds_difference": 0.0}
    reported = audit_predictions(
        "m", features, target, predicted, ("sex", "race"), FairnessConfig(**limits)
    ).features["sex & race"]
    assert not reported.gated and reported.passed
    assert any("reported, not gated" in w for w in reported.warnings)
    assert "| sex & race |" in fairness_table(
        audit_predictions("m", features, target, predicted, ("sex", "race"), FairnessConfig())
    )
    gated = audit_predictions(
        "m", features, target, predicted, ("sex", "race"),
        FairnessConfig(**limits, intersection="gate"),
    ).features["sex & race"]  # fmt: skip
    assert gated.gated and not gated.passed
    groups = {g.group for g in gated.groups}
    assert "Female & White" in groups and "Male & Black" in groups


def test_the_chart_has_one_panel_per_rate(predictions) -> None:
    features, target, predicted = predictions
    audit = audit_predictions("m", features, target, predicted, ("race",), FairnessConfig())
    figure = audit_figure(audit.features["race"], "race")
    assert len(figure.axes) == 4
    assert len(figure.axes[0].patches) == len(audit.features["race"].groups)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("fairness.max_equalized_odds_difference=1.5", "fairness.max_equalized_odds_difference"),
        ("fairness.max_demographic_parity_difference=-0.1", "max_demographic_parity_difference"),
        ("fairness.features=[zip]", "fairness feature 'zip' is not a feature column"),
        ("fairness.features=[age]", "fairness feature 'age' is numeric"),
        ("fairness.features=[income]", "fairness feature 'income' is not a feature column"),
        ("fairness.intersection=maybe", "fairness.intersection"),
        ("fairness.min_group_rows=0", "fairness.min_group_rows"),
    ],
)
def test_bad_fairness_settings_are_config_errors(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, [override])
    assert expected in str(caught.value)


LR = "{name: lr, kind: logistic_regression}"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.candidates=[{name: fair, kind: threshold_optimizer,"
          " params: {base: nope, sensitive_feature: sex}}]"],
         "needs params.base naming one of the other candidates [], got 'nope'"),
        ([f"train.candidates=[{LR}, {{name: fair, kind: threshold_optimizer,"
          " params: {base: lr, sensitive_feature: age}}]"],
         "needs params.sensitive_feature naming an audited feature (['sex', 'race']), got 'age'"),
        ([f"train.candidates=[{LR}, {{name: fair, kind: threshold_optimizer,"
          " params: {base: lr, sensitive_feature: sex}}]", "split.valid_size=0"],
         "is fitted on the validation split; split.valid_size must be above 0"),
    ],
)  # fmt: skip
def test_a_mitigation_needs_a_base_a_sensitive_feature_and_a_valid_split(overrides, expected):
    with pytest.raises(ConfigError) as caught:
        load_config(None, overrides)
    assert expected in str(caught.value)


def _with_age_bins(tmp_path, bins: str) -> str:
    from importlib import resources

    text = resources.files("trustflow.datasets").joinpath("adult", "schema.yaml").read_text()
    text = text.replace("age: {kind: numeric, bounds: [17, 90]}",
                        f"age: {{kind: numeric, bounds: [17, 90], bins: {bins}}}")  # fmt: skip
    schema = tmp_path / "schema.yaml"
    schema.write_text(text)
    return str(schema)


def test_a_numeric_sensitive_feature_is_audited_by_its_bins(predictions, tmp_path) -> None:
    from trustflow.fairness import sensitive_groups

    features, target, predicted = predictions
    cfg = load_config(None, [f"data.dataset={_with_age_bins(tmp_path, '[30, 50]')}",
                             "fairness.features=[sex, age]", "fairness.min_group_rows=30",
                             f"train.candidates=[{LR}]"])  # fmt: skip
    groups = sensitive_groups(features, cfg.data.dataset, ("sex", "age"))
    ages = features["age"]
    expected = {"<30": (ages < 30).sum(), "30-50": ages.between(30, 49.999).sum(),
                ">=50": (ages >= 50).sum()}  # fmt: skip
    assert groups["age"].value_counts().to_dict() == expected
    assert groups["sex"].equals(features["sex"])
    audit = audit_predictions("lr", groups, target, predicted, ("sex", "age"), cfg.fairness)
    age = audit.features["age"]
    assert {g.group: g.count for g in age.groups} == expected
    assert age.equalized_odds_difference is not None  # three groups, each measured
    assert "sex & age" in audit.features


@pytest.mark.parametrize(
    ("bins", "extra", "expected"),
    [
        (None, [], "fairness feature 'age' is numeric; give it bins in the schema"),
        ("[50, 30]", [], "bins [50.0, 30.0] must be strictly increasing"),
        ("[30, 50]", [f"train.candidates=[{LR}, {{name: fair, kind: threshold_optimizer, "
                      "params: {base: lr, sensitive_feature: age}}]"],
         "'age' is numeric, so name a categorical one"),
    ],
)  # fmt: skip
def test_numeric_sensitive_features_need_bins_and_no_mitigation(tmp_path, bins, extra, expected):
    dataset = [f"data.dataset={_with_age_bins(tmp_path, bins)}"] if bins else []
    with pytest.raises(ConfigError) as caught:
        load_config(None, [*dataset, "fairness.features=[sex, age]", f"train.candidates=[{LR}]",
                           *extra])  # fmt: skip
    assert expected in str(caught.value)
