import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from trustflow.config import CandidateConfig, SplitConfig, TabularConfig
from trustflow.data.split import split_frame
from trustflow.data.validate import validate_frame
from trustflow.evaluate import confusion_figure, evaluate_model, roc_figure
from trustflow.models.candidates import train_candidate
from trustflow.models.preprocess import features_and_target, fit_preprocessor

SCHEMA = TabularConfig().data.dataset


@pytest.fixture(scope="module")
def splits(adult_sample: pd.DataFrame):
    frame, _ = validate_frame(adult_sample, SCHEMA, "drop", "sample")
    return split_frame(frame, "income", SplitConfig())


def test_split_is_stratified_deterministic_and_disjoint(splits, adult_sample) -> None:
    again = split_frame(
        validate_frame(adult_sample, SCHEMA, "drop", "s")[0], "income", SplitConfig()
    )
    pd.testing.assert_frame_equal(splits.test, again.test)
    rate = [(s["income"] == ">50K").mean() for s in (splits.train, splits.valid, splits.test)]
    assert max(rate) - min(rate) < 0.02
    sizes = len(splits.train) + len(splits.valid) + len(splits.test)
    assert sizes == len(validate_frame(adult_sample, SCHEMA, "drop", "s")[0])


def test_preprocessor_encodes_every_schema_category(splits) -> None:
    fitted = fit_preprocessor(splits.train, SCHEMA)
    n_categories = sum(len(SCHEMA.columns[c].categories) for c in SCHEMA.categorical_features)  # type: ignore[union-attr]
    features, _ = features_and_target(splits.test, SCHEMA)
    assert fitted.transform(features).shape[1] == len(SCHEMA.numeric_features) + n_categories


@pytest.mark.parametrize("kind", ["logistic_regression", "hist_gradient_boosting"])
def test_candidates_train_deterministically_and_beat_chance(kind: str, splits) -> None:
    cfg = CandidateConfig(name="c", kind=kind, params={"max_iter": 50} if "hist" in kind else {})
    features, target = features_and_target(splits.train, SCHEMA)
    test_x, test_y = features_and_target(splits.test, SCHEMA)
    first = train_candidate(fit_preprocessor(splits.train, SCHEMA), features, target, cfg, 1)
    second = train_candidate(fit_preprocessor(splits.train, SCHEMA), features, target, cfg, 1)
    np.testing.assert_array_equal(first.predict_proba(test_x), second.predict_proba(test_x))
    evaluation = evaluate_model(first, test_x, test_y, SCHEMA.target_labels)
    assert evaluation.metrics.roc_auc > 0.8
    assert sum(map(sum, evaluation.confusion)) == len(test_y)
    assert roc_figure(evaluation, "t").axes and confusion_figure(evaluation, "t", ("a", "b")).axes


def test_an_unknown_hyper_parameter_never_reaches_training() -> None:
    """The kind's params model refuses it as the config is built (load_config turns this into
    a ConfigError: tests/unit/test_kinds.py)."""
    with pytest.raises(ValidationError, match=r"candidate 'lr' \(logistic_regression\): "
                       r"unknown param 'depth'; allowed: C, max_iter"):  # fmt: skip
        CandidateConfig(name="lr", kind="logistic_regression", params={"depth": 3})


def test_missing_values_are_encoded_without_inventing_categories(adult_sample) -> None:
    frame, _ = validate_frame(adult_sample, SCHEMA, "impute", "sample")
    fitted = fit_preprocessor(frame, SCHEMA)
    features, _ = features_and_target(frame, SCHEMA)
    encoded = fitted.transform(features)
    assert not np.isnan(encoded).any()
    missing_occupation = features["occupation"].isna().to_numpy()
    assert missing_occupation.any()
    names = list(fitted.get_feature_names_out())
    occupation = [i for i, n in enumerate(names) if n.startswith("occupation_")]
    assert (encoded[missing_occupation][:, occupation] == 0).all()  # unknown: all zeros
    assert (encoded[~missing_occupation][:, occupation].sum(axis=1) == 1).all()
