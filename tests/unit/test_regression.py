"""A regression target (target.task: regression) on the bundled diabetes data: the schema's
rules, an unstratified split, RMSE/MAE/R², ONNX parity of values within a tolerance, the value
the server returns, and the explanation of the predicted value."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_absolute_error, r2_score

from trustflow.config import CandidateConfig, DatasetSchema, OnnxConfig, load_config
from trustflow.data.sources import load_source
from trustflow.data.split import split_frame, split_problem
from trustflow.data.validate import validate_frame
from trustflow.errors import ConfigError, DataValidationError
from trustflow.evaluate import evaluate_model, fit_figure, residual_figure
from trustflow.explain import explain_black_box
from trustflow.export.onnx import check_parity, convert_pipeline
from trustflow.models.candidates import train_candidate
from trustflow.models.kinds import KINDS
from trustflow.models.preprocess import features_and_target, fit_preprocessor
from trustflow.serving.app import ModelRelease
from trustflow.serving.scorer import Scorer

CONFIG = load_config(None, ["data.dataset=bundled:diabetes"])
DIABETES = CONFIG.data.dataset


@pytest.fixture(scope="module")
def diabetes() -> tuple[pd.DataFrame, pd.DataFrame]:
    frame, _ = validate_frame(load_source("bundled:diabetes").frame, DIABETES, "drop", "d")
    parts = split_frame(frame, "progression", CONFIG.split, stratify=False)
    return parts.train, parts.test


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"column": "y", "task": "regression"},
         "target 'y' (task: regression) must be a numeric column with no positive class"),
        ({"column": "x", "task": "regression", "positive": "1"},
         "target 'x' (task: regression) must be a numeric column with no positive class"),
        ({"column": "x", "positive": "1"},
         "target 'x' (task: binary) must be a categorical column; a numeric target to predict "
         "is task: regression"),
    ],
)  # fmt: skip
def test_the_target_must_match_its_task(target: dict, message: str) -> None:
    columns = {"x": {"kind": "numeric"}, "y": {"kind": "categorical", "categories": ["a", "b"]}}
    with pytest.raises(ValueError, match=re.escape(message)):
        DatasetSchema.model_validate({"name": "t", "columns": columns, "target": target})


def test_a_regression_config_has_its_own_defaults() -> None:
    assert DIABETES.target.task == "regression" and DIABETES.target_labels == ()
    assert CONFIG.registry.metric == "rmse" and CONFIG.registry.model_name == "diabetes"
    assert [c.name for c in CONFIG.candidates] == ["ridge", "hgb", "ebm", "mlp"]
    assert CONFIG.left_out == {}
    keras = load_config(
        None, ["data.dataset=bundled:diabetes", "train.candidates.mlp.kind=keras_mlp"]
    )
    assert keras.left_out == {
        "mlp": "candidate 'mlp' left out: keras_mlp cannot learn a regression target"
    }
    wrong = "registry.metric roc_auc does not suit data set 'diabetes' (task: regression); use "
    with pytest.raises(ConfigError, match=re.escape(wrong + "one of rmse, mae, r2")):
        load_config(None, ["data.dataset=bundled:diabetes", "registry.metric=roc_auc"])
    with pytest.raises(ConfigError, match=re.escape("registry.metric rmse does not suit data set")):
        load_config(None, ["registry.metric=rmse"])
    # --set by name and --candidates reach the regression list, not the built-in classifiers.
    tuned = load_config(
        None, ["data.dataset=bundled:diabetes", "train.candidates.hgb.params.max_iter=30"]
    )
    assert [c.name for c in tuned.candidates] == ["ridge", "hgb", "ebm", "mlp"]
    assert tuned.candidates[1].params["max_iter"] == 30 and tuned.left_out == {}
    only = load_config(None, ["data.dataset=bundled:diabetes"], candidates=["ridge"])
    assert [c.name for c in only.candidates] == ["ridge"]
    assert KINDS["ridge"].tasks == frozenset({"regression"})
    assert "regression" not in KINDS["logistic_regression"].tasks


def test_the_split_is_not_stratified_and_needs_a_row_in_each_part(diabetes) -> None:
    train, test = diabetes
    assert len(train) + len(test) < 442 and len(test) == 89  # the valid split holds the rest
    labels = pd.Series(np.arange(2.0))
    assert split_problem(labels, CONFIG.split, stratify=False) == (
        "2 rows are too few for the split (split.test_size 0.2, split.valid_size 0.1): each "
        "split needs a row, which takes at least 3 rows"
    )
    same = load_source("bundled:diabetes").frame.assign(progression="100")
    with pytest.raises(DataValidationError, match="target 'progression' has the one value 100 "
                       "in every row; there is nothing to regress on"):  # fmt: skip
        validate_frame(same, DIABETES, "drop", "same.csv")


@pytest.mark.parametrize("kind", ["ridge", "hist_gradient_boosting", "random_forest",
                                  "explainable_boosting"])  # fmt: skip
def test_each_regressor_fits_and_its_onnx_values_match(kind: str, diabetes, request) -> None:
    train, test = diabetes
    params = {"explainable_boosting": {"outer_bags": 2, "interactions": 0}}.get(kind, {})
    cfg = CandidateConfig(name="r", kind=kind, params=params)
    features, target = features_and_target(train, DIABETES)
    assert target.dtype == np.float64
    model = train_candidate(
        fit_preprocessor(train, DIABETES), features, target, cfg, 0, "regression"
    )
    test_x, test_y = features_and_target(test, DIABETES)
    evaluation = evaluate_model(model, test_x, test_y, ())
    metrics, predicted = evaluation.metrics, model.predict(test_x)
    assert set(metrics.values()) == {"rmse", "mae", "r2"}
    assert metrics.r2 == pytest.approx(r2_score(test_y, predicted)) and metrics.r2 > 0.2
    assert metrics.mae == pytest.approx(mean_absolute_error(test_y, predicted))
    assert len(evaluation.points) == len(test_y) and not evaluation.curves
    assert fit_figure(evaluation, "t").axes and residual_figure(evaluation, "t").axes

    graph = convert_pipeline(model, DIABETES, OnnxConfig(), KINDS[kind].onnx)
    assert [output.name for output in graph.graph.output] == ["value"]
    report = check_parity(model, graph.SerializeToString(), test, DIABETES, OnnxConfig())
    # Every value within tolerance: HGB's thresholds compared in double (_DoubleTrees), which in
    # float32 sent 5 of these 89 rows down another branch.
    assert report.parity.passed and report.parity.label_agreement == 1, report.parity.reason()
    assert report.parity.value_rtol == 1e-5 and "of values within" in report.parity.reason()

    scorer = Scorer(ModelRelease("diabetes", "1", "test", graph.SerializeToString()))
    assert scorer.regression and scorer.classes is None
    columns = {name: test[name].tolist() for name in scorer.columns}
    served = scorer.predict(columns, len(test)).labels
    np.testing.assert_allclose(served, predicted, rtol=1e-5, atol=1e-4)


def test_a_regressors_explanation_is_of_its_value(diabetes) -> None:
    train, test = diabetes
    features, target = features_and_target(train, DIABETES)
    cfg = CandidateConfig(name="ridge", kind="ridge")
    model = train_candidate(
        fit_preprocessor(train, DIABETES), features, target, cfg, 0, "regression"
    )
    explanation, _ = explain_black_box(
        model, "ridge", test[DIABETES.feature_columns], DIABETES, 50, 0
    )
    assert explanation.method == "morris_sensitivity_value"
    # Body mass index and s5 (serum triglycerides) lead, as in Efron et al.'s own analysis.
    assert {i.feature for i in explanation.importances[:3]} & {"bmi", "s5"}


def test_the_regression_audit_gates_on_the_mae_ratio_and_the_worst_groups_mae() -> None:
    """Group B's errors are twice group A's: an MAE ratio of 2; a group under the minimum is
    listed and not measured."""
    from trustflow.config import FairnessConfig
    from trustflow.fairness import audit_regression, fairness_table

    groups = pd.DataFrame({"g": ["A"] * 100 + ["B"] * 100 + ["C"] * 5})
    target = np.zeros(205)
    predicted = np.concatenate([np.full(100, 1.0), np.full(100, -2.0), np.full(5, 9.0)])
    cfg = FairnessConfig(min_group_rows=50, max_group_mae=1.5)
    audit = audit_regression("m", groups, target, predicted, ("g",), cfg)
    feature = audit.features["g"]
    assert feature.mae_ratio == pytest.approx(2.0) and feature.worst_group_mae == pytest.approx(2.0)
    assert [(g.group, g.measured) for g in feature.groups] == [
        ("A", True),
        ("B", True),
        ("C", False),
    ]
    assert [v.metric for v in feature.violations] == ["mae_ratio", "group_mae"]
    assert audit.reason().startswith(
        "mae_ratio for g = 2.000 (mean absolute error B 2.000 vs A 1.000) exceeds "
        "fairness.max_mae_ratio = 1.25"
    )
    assert "| g | 2.000 | 2.000 | no |" in fairness_table(audit)
    fair = audit_regression("m", groups, target, np.where(predicted > 0, 1.0, -1.1), ("g",), cfg)
    assert fair.passed and fair.features["g"].mae_ratio == pytest.approx(1.1)


def test_the_lightning_network_regresses_and_its_graph_gives_its_values(diabetes) -> None:
    from trustflow.models.candidates import train_network

    train, test = diabetes
    valid, train = train[:40], train[40:]
    cfg = CandidateConfig(name="mlp", kind="mlp", params={"hidden": [64], "max_epochs": 60})
    model = train_network(
        fit_preprocessor(train, DIABETES),
        features_and_target(train, DIABETES),
        features_and_target(valid, DIABETES),
        cfg,
        0,
        "cpu",
        task="regression",
    )
    network = model.steps[-1][1]
    assert network.spec_["classes"] == 1 and network.spec_["target"][0] == pytest.approx(
        float(train["progression"].mean()), rel=1e-6
    )
    test_x, test_y = features_and_target(test, DIABETES)
    assert evaluate_model(model, test_x, test_y, ()).metrics.r2 > 0.2
    graph = convert_pipeline(model, DIABETES, OnnxConfig(), "network")
    assert [output.name for output in graph.graph.output] == ["value"]
    report = check_parity(model, graph.SerializeToString(), test, DIABETES, OnnxConfig())
    assert report.parity.passed, report.parity.reason()
