"""DP-SGD in the core: the plan (σ from the accountant, δ below 1/n), training with exactly that
plan (Opacus inside Lightning, Poisson sampling kept), determinism for a seed, and the DP
logistic regression's ONNX form."""

from __future__ import annotations

import numpy as np
import pytest

from trustflow.config import CandidateConfig, OnnxConfig, TabularConfig
from trustflow.errors import ConfigError
from trustflow.export.onnx import convert_pipeline, to_feed
from trustflow.models.candidates import train_network
from trustflow.models.neural import NeuralClassifier
from trustflow.privacy.dpsgd import plan_dp_sgd, spent_epsilon
from trustflow.serving.app import ModelRelease
from trustflow.serving.scorer import Scorer

SCHEMA = TabularConfig().data.dataset
LINEAR = {"max_epochs": 3, "batch_size": 256, "patience": 3}


def _plan(rows: int, epsilon: float = 1.0, epochs: int = 3, batch: int = 256):
    return plan_dp_sgd(
        rows=rows,
        batch_size=batch,
        epochs=epochs,
        epsilon=epsilon,
        delta=1e-5,
        max_grad_norm=1.0,
        accountant="prv",
    )


def _fit(adult, kind="linear", params=LINEAR, seed=0, plan=None) -> NeuralClassifier:
    pre, train, valid, _ = adult
    x = pre.transform(train[0])
    plan = plan or _plan(len(x), batch=params["batch_size"], epochs=params["max_epochs"])
    return NeuralClassifier(kind, params, seed, "cpu").fit(
        x, train[1], valid=(pre.transform(valid[0]), valid[1]), dp=plan
    )


def test_the_plan_calibrates_more_noise_for_a_smaller_epsilon_and_holds_to_it() -> None:
    tight, loose = _plan(2000, epsilon=0.5), _plan(2000, epsilon=4.0)
    assert tight.noise_multiplier > loose.noise_multiplier > 0
    assert tight.sample_rate == pytest.approx(1 / 8)  # ceil(2000 / 256) batches
    assert tight.steps == 3 * 8
    # The accountant, run over the planned steps, gives back the ε asked for (to its tolerance).
    assert spent_epsilon(tight, tight.steps) == pytest.approx(0.5, rel=0.02)
    assert spent_epsilon(tight, tight.steps // 3) < 0.5


def test_a_delta_of_one_over_n_or_more_is_refused_naming_n() -> None:
    with pytest.raises(ValueError, match=r"delta = 0.001 must be below 1/n = 0.0005 .*2,000"):
        plan_dp_sgd(
            rows=2000, batch_size=256, epochs=3, epsilon=1.0, delta=1e-3, max_grad_norm=1.0,
            accountant="rdp",
        )  # fmt: skip


def test_dp_sgd_noise_is_secret_not_seeded_and_the_model_records_its_guarantee(adult) -> None:
    """The seed initialises the weights; the sampling and the noise come from the OS's secret
    randomness (a public seed would let anyone subtract the noise): two fits, two models."""
    first, again = _fit(adult), _fit(adult)
    assert not all(np.array_equal(first.state_[k], again.state_[k]) for k in first.state_)
    privacy = first.privacy_
    assert privacy["epsilon"] == 1.0 and privacy["accountant"] == "prv"
    assert privacy["steps_to_best"] <= privacy["steps"]
    assert 0 < privacy["epsilon_at_best"] <= 1.0 + 1e-6
    # A logistic regression: one linear layer, inputs -> 2 logits.
    assert [v.shape for v in first.state_.values()] == [(2, first.spec_["inputs"]), (2,)]


def test_noise_is_added_the_same_data_without_dp_gives_another_model(adult) -> None:
    pre, train, valid, _ = adult
    x, xv = pre.transform(train[0]), pre.transform(valid[0])
    plain = NeuralClassifier("linear", LINEAR, 0, "cpu").fit(x, train[1], valid=(xv, valid[1]))
    private = _fit(adult)
    assert plain.privacy_ is None
    assert not all(np.array_equal(plain.state_[k], private.state_[k]) for k in plain.state_)


def test_a_plan_made_for_other_rows_is_refused(adult) -> None:
    with pytest.raises(ValueError, match="does not match"):
        _fit(adult, plan=_plan(999))


def test_the_dp_mlp_has_no_periodic_embeddings_and_its_pipeline_exports_to_onnx(adult) -> None:
    """Opacus has no per-sample gradient rule for the periodic layer (its functorch fallback
    made an epoch ~20x slower here), so the DP MLP is the plain one; the DP logistic
    regression is a network like it, with the same ONNX road."""
    pre, train, valid, test = adult
    for cfg in (
        CandidateConfig(name="mlp", kind="mlp", params={"hidden": [16], **LINEAR}),
        CandidateConfig(name="dp-logreg", kind="dp_logistic_regression", params=LINEAR),
    ):
        plan = _plan(len(train[1]), batch=256, epochs=3)
        model = train_network(pre, train, valid, cfg, 0, "cpu", dp=plan)
        network = model.steps[-1][1]
        assert "periodic" not in network.spec_ and network.privacy_["noise_multiplier"] > 0
        graph = convert_pipeline(model, SCHEMA, OnnxConfig(), "network")
        scorer = Scorer(ModelRelease("adult-income", "1", "test", graph.SerializeToString()))
        labels, probabilities = scorer.session.run(
            ["label", "probabilities"], to_feed(test[0], SCHEMA)
        )
        assert np.abs(probabilities - model.predict_proba(test[0])).max() < 1e-5
        assert np.array_equal(labels, model.predict(test[0]))


def test_a_kind_that_cannot_train_with_dp_sgd_is_refused(adult) -> None:
    pre, train, valid, _ = adult
    cfg = CandidateConfig(name="keras", kind="keras_mlp", params={"max_epochs": 1})
    with pytest.raises(ConfigError, match=r"'keras' \(keras_mlp\) cannot train with DP-SGD"):
        train_network(pre, train, valid, cfg, 0, "cpu", dp=_plan(len(train[1])))
