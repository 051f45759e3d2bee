"""A multiclass target (target.task: multiclass) on the bundled Iris data: the schema's rules,
the metrics and curves per class, ONNX parity of every kind that learns it, an explanation per
class, and a fairness audit one class against the rest."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from trustflow.config import CandidateConfig, DatasetSchema, FairnessConfig, OnnxConfig, load_config
from trustflow.data.sources import load_source
from trustflow.data.split import split_frame
from trustflow.data.validate import validate_frame
from trustflow.errors import ConfigError
from trustflow.evaluate import confusion_figure, evaluate_model, roc_figure
from trustflow.explain import explain_black_box
from trustflow.export.onnx import check_parity, convert_pipeline
from trustflow.fairness import audit_predictions
from trustflow.models.candidates import train_candidate
from trustflow.models.kinds import KINDS
from trustflow.models.preprocess import features_and_target, fit_preprocessor

IRIS = load_config(None, ["data.dataset=bundled:iris"]).data.dataset
LABELS = ("setosa", "versicolor", "virginica")


@pytest.fixture(scope="module")
def iris() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) of the bundled Iris rows, validated against the bundled schema."""
    frame, _ = validate_frame(load_source("bundled:iris").frame, IRIS, "drop", "bundled:iris")
    splits = load_config(None, ["data.dataset=bundled:iris"]).split
    parts = split_frame(frame, "species", splits)
    return parts.train, parts.test


def _schema(**target: object) -> dict:
    return {
        "name": "t",
        "columns": {
            "x": {"kind": "numeric"},
            "y": {"kind": "categorical", "categories": list(target.pop("categories"))},
        },
        "target": {"column": "y", **target},
    }


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"task": "multiclass", "categories": ["a", "b"]},
         "target 'y' (task: multiclass) needs three or more categories and no positive class, "
         "got ['a', 'b']"),
        ({"task": "multiclass", "positive": "a", "categories": ["a", "b", "c"]},
         "got ['a', 'b', 'c'] and positive 'a'"),
        ({"positive": "a", "categories": ["a", "b", "c"]},
         "needs exactly two categories including positive 'a', got ['a', 'b', 'c']; for more, "
         "set target.task: multiclass"),
        ({"categories": ["a", "b"]}, "including positive None"),
    ],
)  # fmt: skip
def test_the_target_must_match_its_task(target: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        DatasetSchema.model_validate(_schema(**target))


def test_labels_keep_the_schemas_order_and_encode_in_it(iris) -> None:
    assert IRIS.target.task == "multiclass" and IRIS.target_labels == LABELS
    train, _ = iris
    _, target = features_and_target(train, IRIS)
    assert sorted(set(target.tolist())) == [0, 1, 2]
    assert (train["species"].to_numpy() == np.array(LABELS)[target]).all()


def test_defaults_leave_out_what_cannot_learn_the_task_and_encryption_is_refused() -> None:
    config = load_config(None, ["data.dataset=bundled:iris"])
    assert [c.name for c in config.candidates] == ["logreg", "hgb", "ebm", "mlp"]
    assert config.left_out == {
        "hgb-fair": "candidate 'hgb-fair' left out: threshold_optimizer cannot learn a "
        "multiclass target"
    }
    assert config.registry.model_name == "iris" and config.tracking.experiment == "iris"
    assert KINDS["threshold_optimizer"].tasks == frozenset({"binary"})
    with pytest.raises(ConfigError, match=r"encryption\.enabled serves a binary target's"):
        load_config(None, ["data.dataset=bundled:iris", "encryption.enabled=true"])


@pytest.mark.parametrize("kind", ["logistic_regression", "hist_gradient_boosting",
                                  "random_forest", "explainable_boosting"])  # fmt: skip
def test_each_kind_learns_three_classes_and_its_onnx_graph_matches(kind: str, iris) -> None:
    train, test = iris
    params = {"explainable_boosting": {"outer_bags": 2}}.get(kind, {})
    cfg = CandidateConfig(name="c", kind=kind, params=params)
    features, target = features_and_target(train, IRIS)
    model = train_candidate(fit_preprocessor(train, IRIS), features, target, cfg, 0)
    test_x, test_y = features_and_target(test, IRIS)
    evaluation = evaluate_model(model, test_x, test_y, LABELS)
    proba = model.predict_proba(test_x)
    metrics = evaluation.metrics
    assert metrics.accuracy >= 0.8  # chance is 1/3
    assert metrics.roc_auc == pytest.approx(roc_auc_score(test_y, proba, multi_class="ovr"))
    assert metrics.f1 == pytest.approx(f1_score(test_y, model.predict(test_x), average="macro"))
    assert set(metrics.values()) == {"roc_auc", "accuracy", "f1", "log_loss", "f1_weighted"}
    assert [c.label for c in evaluation.curves] == list(LABELS)
    assert np.array(evaluation.confusion).shape == (3, 3)
    assert sum(map(sum, evaluation.confusion)) == len(test_y)
    assert len(roc_figure(evaluation, "t").axes[0].lines) == 4  # three classes and chance
    assert confusion_figure(evaluation, "t", LABELS).axes

    graph = convert_pipeline(model, IRIS, OnnxConfig(), KINDS[kind].onnx)
    classes = next(p.value for p in graph.metadata_props if p.key == "trustflow.classes")
    assert classes == '["setosa", "versicolor", "virginica"]'
    report = check_parity(model, graph.SerializeToString(), test, IRIS, OnnxConfig())
    assert report.parity.passed and report.parity.max_abs_diff < 1e-4, report.parity


def test_the_black_box_explanation_averages_the_classes(iris) -> None:
    train, test = iris
    features, target = features_and_target(train, IRIS)
    cfg = CandidateConfig(name="lr", kind="logistic_regression")
    model = train_candidate(fit_preprocessor(train, IRIS), features, target, cfg, 0)
    explanation, html = explain_black_box(model, "lr", test[IRIS.feature_columns], IRIS, 30, 0)
    assert explanation.method == "morris_sensitivity_classes"
    assert {i.feature for i in explanation.importances} == set(IRIS.feature_columns)
    # Petal size separates the species (Fisher's own finding); sepal width does least.
    assert explanation.importances[0].feature.startswith("petal")
    assert html.count("P(setosa)") >= 1 and html.count("P(virginica)") >= 1


def test_a_multiclass_audit_reports_each_features_worst_class() -> None:
    """Class 2 is predicted right for group A and never for group B: its one-vs-rest
    equalized-odds gap is 1, the others' are smaller; the audit names class 'c'."""
    rng = np.random.default_rng(0)
    groups = pd.DataFrame({"g": np.repeat(["A", "B"], 600)})
    target = np.tile(np.repeat([0, 1, 2], 200), 2)
    predicted = target.copy()
    predicted[(groups["g"] == "B").to_numpy() & (target == 2)] = 1
    noise = rng.random(len(target)) < 0.05
    predicted[noise] = rng.integers(0, 3, noise.sum())
    cfg = FairnessConfig(max_equalized_odds_difference=0.2)
    audit = audit_predictions("m", groups, target, predicted, ("g",), cfg, ("a", "b", "c"))
    feature = audit.features["g"]
    one_vs_rest = audit_predictions("m", groups, target == 2, predicted == 2, ("g",), cfg)
    assert feature.equalized_odds_difference == one_vs_rest.features["g"].equalized_odds_difference
    assert feature.equalized_odds_difference > 0.9 and not audit.passed
    assert audit.reason().startswith(
        "equalized_odds_difference for g (class 'c' vs the rest) = 0.9"
    )
