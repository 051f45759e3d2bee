"""Whole-pipeline ONNX conversion (both candidate kinds) and the parity check."""

import numpy as np
import pandas as pd
import pytest

from trustflow.config import CandidateConfig, OnnxConfig, SplitConfig, TabularConfig
from trustflow.data.split import split_frame
from trustflow.data.validate import validate_frame
from trustflow.export.onnx import check_parity, convert_pipeline, inference_session, to_feed
from trustflow.models.candidates import train_candidate
from trustflow.models.preprocess import features_and_target, fit_preprocessor

SCHEMA = TabularConfig().data.dataset
CANDIDATES = [
    CandidateConfig(name="lr", kind="logistic_regression"),
    # HistGradientBoostingClassifier is the one skl2onnx 1.20 cannot convert unaided.
    CandidateConfig(name="hgb", kind="hist_gradient_boosting", params={"max_iter": 60}),
]


@pytest.fixture(scope="module")
def data(adult_sample: pd.DataFrame):
    frame, _ = validate_frame(adult_sample, SCHEMA, "impute", "sample")  # keeps missing cells
    return split_frame(frame, "income", SplitConfig())


def _fit(cfg: CandidateConfig, data):
    features, target = features_and_target(data.train, SCHEMA)
    return train_candidate(fit_preprocessor(data.train, SCHEMA), features, target, cfg, 0)


@pytest.mark.parametrize("cfg", CANDIDATES, ids=lambda c: c.name)
def test_pipeline_converts_and_matches_the_native_model(cfg, data) -> None:
    model = _fit(cfg, data)
    graph = convert_pipeline(model, SCHEMA, OnnxConfig(), cfg.model_kind.onnx)

    assert [i.name for i in graph.graph.input] == SCHEMA.feature_columns  # clients send columns
    assert [o.name for o in graph.graph.output] == ["label", "probabilities"]
    report = check_parity(model, graph.SerializeToString(), data.test, SCHEMA, OnnxConfig())
    assert report.parity.passed, report.parity.reason()
    assert report.parity.max_abs_diff <= 1e-4 and report.parity.label_agreement >= 0.999
    assert report.size_bytes > 0 and report.latency_us_single_row > 0


@pytest.mark.parametrize("cfg", CANDIDATES, ids=lambda c: c.name)
def test_the_same_model_converts_to_the_same_bytes(cfg, data) -> None:
    """The ONNX file's hash is part of a model's content address."""
    model = _fit(cfg, data)
    first = convert_pipeline(model, SCHEMA, OnnxConfig(), "skl2onnx").SerializeToString()
    assert convert_pipeline(model, SCHEMA, OnnxConfig(), "skl2onnx").SerializeToString() == first


def test_missing_values_score_like_the_native_model(data) -> None:
    features, target = features_and_target(data.train, SCHEMA)
    model = train_candidate(
        fit_preprocessor(data.train, SCHEMA), features, target, CANDIDATES[1], 0
    )
    rows = data.test.head(3).copy()
    rows.loc[rows.index[0], "occupation"] = None  # sent to ONNX as ""
    rows.loc[rows.index[1], "age"] = np.nan
    graph = convert_pipeline(model, SCHEMA, OnnxConfig(), "skl2onnx")
    session = inference_session(graph.SerializeToString())
    _, probabilities = session.run(None, to_feed(rows, SCHEMA))
    native = model.predict_proba(rows[SCHEMA.feature_columns])
    np.testing.assert_allclose(probabilities, native, atol=1e-6)


def test_parity_fails_with_a_reason_naming_the_limit(data) -> None:
    features, target = features_and_target(data.train, SCHEMA)
    model = train_candidate(
        fit_preprocessor(data.train, SCHEMA), features, target, CANDIDATES[1], 0
    )
    strict = OnnxConfig(max_abs_diff=1e-30)
    graph = convert_pipeline(model, SCHEMA, strict, "skl2onnx").SerializeToString()
    parity = check_parity(model, graph, data.test, SCHEMA, strict).parity
    assert not parity.passed
    assert "exceeds onnx.max_abs_diff = 1e-30" in parity.reason()
