"""The model-kind registry: typed params checked when the config loads, traits instead of name
checks, and random_forest as a kind added in one entry."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from trustflow.config import CandidateConfig, OnnxConfig, SplitConfig, TabularConfig, load_config
from trustflow.data.split import split_frame
from trustflow.data.validate import validate_frame
from trustflow.errors import ConfigError
from trustflow.export.onnx import check_parity, convert_pipeline
from trustflow.models.candidates import train_candidate
from trustflow.models.kinds import KINDS
from trustflow.models.preprocess import features_and_target, fit_preprocessor

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = TabularConfig().data.dataset


def _candidates(text: str) -> TabularConfig:
    return load_config(None, [f"train.candidates=[{text}]"])


@pytest.mark.parametrize(
    ("candidate", "message"),
    [
        ("{name: a, kind: svm}", "candidate 'a': unknown kind 'svm'; known kinds: "
         "logistic_regression, ridge, hist_gradient_boosting, random_forest"),
        ("{name: lr, kind: logistic_regression, params: {c: 1.0}}",
         "candidate 'lr' (logistic_regression): unknown param 'c'; allowed: C, max_iter"),
        ("{name: rf, kind: random_forest, params: {n_estimators: many}}",
         "candidate 'rf' (random_forest): params.n_estimators = 'many': Input should be a "
         "valid integer"),
        ("{name: m, kind: mlp, params: {hidden: [8], periodic: {width: 0}}}",
         "candidate 'm' (mlp): params.periodic.width = 0: Input should be greater than or "
         "equal to 1"),
        ("{name: f, kind: threshold_optimizer, params: {sensitive_feature: sex}}",
         "candidate 'f' (threshold_optimizer): param 'base' is required"),
    ],
)  # fmt: skip
def test_a_bad_kind_or_param_fails_when_the_config_loads(candidate: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _candidates(candidate)
    assert message in str(caught.value)
    assert str(caught.value).startswith("config: train.candidates.0: candidate")


@pytest.mark.parametrize("kind", [k for k in KINDS.values() if k.build is not None])
def test_declared_defaults_are_the_libraries_own(kind) -> None:
    """What the params models (and so the Prefect UI and the docs) say is what trains."""
    task = "binary" if "binary" in kind.tasks else "regression"
    built = kind.build(kind.params(), 0, task).get_params()
    for name, value in kind.params().model_dump().items():
        assert built[name] == value, f"{kind.name}.{name}"


def test_no_layer_compares_kind_names() -> None:
    """Flows, tasks and the core ask a kind's traits; only the registry knows the names."""
    comparison = re.compile(r"\.kind\s*(==|!=|\bin\b|\bnot in\b)|MITIGATION_KINDS")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("src/trustflow", "tasks", "flows")
        for path in (ROOT / folder).rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if comparison.search(line) and "self.kind" not in line  # a network's architecture
    ]
    assert offenders == []


def test_random_forest_trains_converts_and_passes_parity(adult_sample: pd.DataFrame) -> None:
    frame, _ = validate_frame(adult_sample, SCHEMA, "impute", "sample")
    data = split_frame(frame, SCHEMA.target.column, SplitConfig())
    cfg = CandidateConfig(
        name="rf", kind="random_forest", params={"n_estimators": 40, "min_samples_leaf": 5}
    )
    features, target = features_and_target(data.train, SCHEMA)
    model = train_candidate(fit_preprocessor(data.train, SCHEMA), features, target, cfg, 0)
    assert type(model.steps[-1][1]).__name__ == "RandomForestClassifier"
    assert model.steps[-1][1].n_estimators == 40 and model.steps[-1][1].random_state == 0
    graph = convert_pipeline(model, SCHEMA, OnnxConfig(), cfg.model_kind.onnx)
    report = check_parity(model, graph.SerializeToString(), data.test, SCHEMA, OnnxConfig())
    assert report.parity.passed, report.parity.reason()
