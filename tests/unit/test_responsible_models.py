"""The responsible-AI candidates and artefacts on real Adult rows: Fairlearn's mitigation lowers
the disparity it targets and says it cannot be exported; the EBM converts to ONNX with parity and
loads in the inference server; InterpretML explanations and the model card hold what they claim."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from trustflow.config import CandidateConfig, DatasetSchema, TabularConfig
from trustflow.data.sources import load_source
from trustflow.data.split import split_frame
from trustflow.data.validate import validate_frame
from trustflow.explain import explain_black_box, explain_glassbox, importance_figure
from trustflow.export.onnx import NotExportable, check_parity, convert_pipeline
from trustflow.fairness import audit_predictions
from trustflow.model_card import NO_PRIVACY, DataFacts, ModelCardFacts, render_model_card
from trustflow.models.candidates import train_candidate
from trustflow.models.mitigation import mitigate_candidate
from trustflow.models.preprocess import features_and_target, fit_preprocessor
from trustflow.serving.scorer import ModelRelease, Scorer

CONFIG = TabularConfig()
SCHEMA: DatasetSchema = CONFIG.data.dataset
SMALL_EBM = CandidateConfig(
    name="ebm", kind="explainable_boosting", params={"outer_bags": 1, "interactions": 2}
)
FAIR = CandidateConfig(
    name="hgb-fair",
    kind="threshold_optimizer",
    params={"base": "hgb", "sensitive_feature": "sex", "constraints": "equalized_odds"},
)


@dataclass
class Trained:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    hgb: object
    ebm: object
    fair: object


@pytest.fixture(scope="module")
def trained() -> Trained:
    raw = load_source("bundled:adult").frame.sample(n=8000, random_state=3)
    frame, _ = validate_frame(raw, SCHEMA, "drop", "sample")
    splits = split_frame(frame, SCHEMA.target.column, CONFIG.split)
    features, target = features_and_target(splits.train, SCHEMA)
    preprocessor = fit_preprocessor(splits.train, SCHEMA)
    hgb_cfg = CandidateConfig(name="hgb", kind="hist_gradient_boosting", params={"max_iter": 60})
    hgb = train_candidate(preprocessor, features, target, hgb_cfg, seed=0)
    ebm = train_candidate(preprocessor, features, target, SMALL_EBM, seed=0)
    valid_features, valid_target = features_and_target(splits.valid, SCHEMA)
    fair = mitigate_candidate(hgb, valid_features, valid_target, FAIR, seed=0)
    return Trained(splits.train, splits.valid, splits.test, hgb, ebm, fair)


def _sex_eod(model, test: pd.DataFrame) -> float:
    features, target = features_and_target(test, SCHEMA)
    audit = audit_predictions(
        "m", features, target, model.predict(features), ("sex",), CONFIG.fairness
    )
    value = audit.features["sex"].equalized_odds_difference
    assert value is not None
    return value


def _by_race(small_groups: str) -> CandidateConfig:
    params = {"base": "hgb", "sensitive_feature": "race", "small_groups": small_groups}
    return CandidateConfig(name="hgb-fair", kind="threshold_optimizer", params=params)


def test_small_groups_are_folded_into_one_or_named(trained) -> None:
    """800 validation rows hold a handful of rows of some races: too few for thresholds of
    their own. Folded, they share one group's; with small_groups=fail the candidate fails."""
    features, target = features_and_target(trained.valid, SCHEMA)
    counts = features["race"].value_counts()
    small = sorted(counts[counts < 30].index)
    assert small  # the sample has such groups
    folded = mitigate_candidate(trained.hgb, features, target, _by_race("fold"), seed=0)
    assert sorted(folded.groups_) == sorted(counts[counts >= 30].index)
    test_features, _ = features_and_target(trained.test, SCHEMA)
    assert set(np.unique(folded.predict(test_features))) <= {0, 1}
    with pytest.raises(ValueError) as caught:
        mitigate_candidate(trained.hgb, features, target, _by_race("fail"), seed=0)
    message = str(caught.value)
    assert message.startswith("race group(s) with fewer than 30 validation rows or one class")
    assert f"{small[0]} " in message and "params.small_groups=fold folds them" in message


def test_threshold_optimizer_lowers_the_disparity_of_its_base_model(trained) -> None:
    base, mitigated = _sex_eod(trained.hgb, trained.test), _sex_eod(trained.fair, trained.test)
    assert mitigated < base / 2, (base, mitigated)
    features, _ = features_and_target(trained.test, SCHEMA)
    proba = trained.fair.predict_proba(features)
    assert proba.shape == (len(features), 2) and np.allclose(proba.sum(axis=1), 1)
    # Randomised, but reproducible: the random state is part of the model.
    assert (trained.fair.predict(features) == trained.fair.predict(features)).all()


def test_a_mitigated_model_says_why_it_cannot_be_exported(trained) -> None:
    with pytest.raises(NotExportable, match=r"cannot be exported to ONNX.*cannot be deployed"):
        convert_pipeline(trained.fair, SCHEMA, CONFIG.onnx, None)


def test_the_ebm_reads_raw_features_and_converts_with_parity(trained) -> None:
    assert [name for name, _ in trained.ebm.steps] == ["model"]  # no one-hot encoding in front
    graph = convert_pipeline(trained.ebm, SCHEMA, CONFIG.onnx, "ebm2onnx").SerializeToString()
    report = check_parity(trained.ebm, graph, trained.test, SCHEMA, CONFIG.onnx)
    assert report.parity.passed and report.parity.max_abs_diff < 1e-5, report
    scorer = Scorer(ModelRelease(name="ebm", version="1", source="test", graph=graph))
    assert list(scorer.columns) == SCHEMA.feature_columns
    assert scorer.classes == list(SCHEMA.target_labels)
    rows = trained.test.head(3)
    columns = {name: rows[name].tolist() for name in SCHEMA.feature_columns}
    prediction = scorer.predict(columns, len(rows))
    expected = trained.ebm.predict_proba(rows[SCHEMA.feature_columns])
    assert np.allclose(prediction.probabilities, expected, atol=1e-5)
    assert prediction.labels.tolist() == trained.ebm.predict(rows[SCHEMA.feature_columns]).tolist()


def test_explanations_rank_every_feature(trained) -> None:
    features, _ = features_and_target(trained.test, SCHEMA)
    agnostic, html = explain_black_box(trained.hgb, "hgb", features, SCHEMA, rows=200, seed=0)
    assert agnostic.method == "morris_sensitivity" and agnostic.rows == 200
    assert {i.feature for i in agnostic.importances} == set(SCHEMA.feature_columns)
    scores = [i.score for i in agnostic.importances]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    assert "plotly" in html
    glass, glass_html = explain_glassbox(trained.ebm, "ebm", rows=len(trained.train))
    names = {i.feature for i in glass.importances}
    assert set(SCHEMA.feature_columns) <= names  # main effects ...
    assert any(" & " in name for name in names)  # ... and the interaction pairs it learned
    assert "plotly" in glass_html
    assert len(importance_figure(glass, top=5).axes[0].patches) == 5


def test_the_model_card_states_lineage_fairness_features_privacy_and_parity(trained) -> None:
    features, target = features_and_target(trained.test, SCHEMA)
    audit = audit_predictions(
        "hgb", features, target, trained.hgb.predict(features), ("sex", "race"), CONFIG.fairness
    )
    explanation, _ = explain_black_box(trained.hgb, "hgb", features, SCHEMA, rows=100, seed=0)
    card = render_model_card(
        ModelCardFacts(
            model_name="adult-income",
            version="3",
            candidate="hgb",
            kind="hist_gradient_boosting",
            target="income",
            labels=("<=50K", ">50K"),
            data=DataFacts(
                name="adult",
                md5="ab" * 16,
                rows=7400,
                dvc_file="data/adult.parquet.dvc",
                remote="/tmp/remote",
                git_revision=None,
                test_rows=len(features),
            ),
            metrics={"roc_auc": 0.91, "accuracy": 0.85},
            selection_metric="roc_auc",
            fairness=audit,
            explanation=explanation,
            onnx=None,
            onnx_reason="no ONNX form for 'hgb': test",
            gates_passed=False,
            gate_reason="no ONNX form for 'hgb': test",
            mlflow_run_id="r1",
        ),
        top_features=3,
    )
    assert card.startswith("# Model card: adult-income v3")
    for section in ("Intended use", "Data lineage", "Metrics", "Fairness", "Top features",
                    "Privacy", "ONNX parity", "Limitations"):  # fmt: skip
        assert f"## {section}" in card
    assert "`" + "ab" * 16 + "`" in card and "| roc_auc (selection metric) | 0.9100 |" in card
    assert "| sex |" in card and "| sex & race |" in card and "Gates: **FAILED**" in card
    top = explanation.importances[0].feature
    assert f"| 1 | {top} |" in card and "| 4 |" not in card
    assert NO_PRIVACY in card and "This version cannot be deployed" in card
