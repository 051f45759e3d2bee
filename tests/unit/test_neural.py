"""The Lightning networks in the core: determinism, early stopping, warm start, device choice,
and their ONNX forms (dynamic batch, parity, served by the inference server's scorer)."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
import torch
from sklearn.pipeline import Pipeline

from trustflow.config import OnnxConfig, TabularConfig
from trustflow.data.digits import PIXELS, digits_frame, features
from trustflow.data.split import split_frame
from trustflow.errors import ConfigError
from trustflow.export.neural import allclose_parity, concat_front, join, network_graph
from trustflow.export.onnx import convert_pipeline, to_feed
from trustflow.io import dump_addressed
from trustflow.models.candidates import train_network
from trustflow.models.neural import NeuralClassifier, WarmStart, resolve_accelerator
from trustflow.serving.app import ModelRelease
from trustflow.serving.scorer import Scorer

FAST = {"hidden": [16], "max_epochs": 6, "patience": 2}
SCHEMA = TabularConfig().data.dataset


def _fit(adult, params=FAST, seed=0, warm=None) -> NeuralClassifier:
    pre, train, valid, _ = adult
    network = NeuralClassifier("mlp", {"numeric": 6, **params}, seed, "cpu")
    return network.fit(
        pre.transform(train[0]), train[1], valid=(pre.transform(valid[0]), valid[1]), warm=warm
    )


def test_the_same_seed_gives_the_same_network_and_another_seed_does_not(adult) -> None:
    first, again, other = _fit(adult), _fit(adult), _fit(adult, seed=1)
    assert first.state_.keys() == again.state_.keys()
    assert all(np.array_equal(first.state_[k], again.state_[k]) for k in first.state_)
    assert not all(np.array_equal(first.state_[k], other.state_[k]) for k in first.state_)


def test_the_same_training_gives_a_byte_identical_model_file(adult, tmp_path) -> None:
    """Content addressing: the model's file name is its hash, so it must not carry the time."""
    first = dump_addressed(_fit(adult), tmp_path / "a", "mlp")
    again = dump_addressed(_fit(adult), tmp_path / "b", "mlp")
    assert first.sha256 == again.sha256
    assert first.path.read_bytes() == again.path.read_bytes()
    assert "timings_" not in joblib.load(first.path).__dict__


def test_early_stopping_keeps_the_best_epoch_and_records_every_epoch(adult) -> None:
    network = _fit(adult, {**FAST, "max_epochs": 60, "patience": 1})
    history = network.history_
    assert 1 < len(history) < 60  # stopped early
    assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
    losses = [h["val_loss"] for h in history]
    assert network.best_epoch_ == int(np.argmin(losses)) + 1
    assert network.best_val_loss_ == pytest.approx(min(losses))
    assert len(network.timings_) == len(history)
    assert all(t["epoch_seconds"] > 0 for t in network.timings_)
    assert network.device_ == "cpu"


def test_a_warm_start_of_the_same_architecture_begins_where_the_source_ended(adult) -> None:
    source = _fit(adult)
    warm = source.warm_start("models:/adult-income/1")
    cold, tuned = _fit(adult, seed=3), _fit(adult, seed=3, warm=warm)
    assert tuned.warm_start_ == {"source": "models:/adult-income/1", "reason": "same architecture"}
    assert tuned.history_[0]["val_loss"] < cold.history_[0]["val_loss"]

    other = WarmStart("models:/adult-income/2", {**source.spec_, "hidden": [32]}, source.state_)
    fresh = _fit(adult, seed=3, warm=other)
    assert fresh.warm_start_["source"] is None
    assert fresh.warm_start_["reason"].startswith("cold start: models:/adult-income/2 has another")
    assert "hidden [32] vs [16]" in fresh.warm_start_["reason"]
    assert all(np.array_equal(fresh.state_[k], cold.state_[k]) for k in cold.state_)


def test_cuda_is_used_when_present_and_refused_when_absent() -> None:
    assert resolve_accelerator("cpu") == "cpu"
    if torch.cuda.is_available():
        assert resolve_accelerator("cuda") == "cuda" == resolve_accelerator("auto")
    else:
        assert resolve_accelerator("auto") == "cpu"
        with pytest.raises(ConfigError, match=r"trainer\.accelerator = cuda, but no CUDA device"):
            resolve_accelerator("cuda")


def test_unknown_network_params_are_named() -> None:
    x, y = np.zeros((4, 3), dtype=np.float32), np.array([0, 1, 0, 1])
    with pytest.raises(ConfigError, match=r"mlp: unknown param 'layers'; allowed: hidden, numeric"):
        NeuralClassifier("mlp", {"layers": 3}).fit(x, y, valid=(x, y))


def test_the_tabular_network_exports_with_a_dynamic_batch_and_is_served(adult) -> None:
    pre, train, valid, test = adult
    cfg = TabularConfig().train.candidates[-1]
    assert cfg.kind == "mlp"
    model = train_network(pre, train, valid, cfg.model_copy(update={"params": FAST}), 0, "cpu")
    graph = convert_pipeline(model, SCHEMA, OnnxConfig(), "network")
    scorer = Scorer(ModelRelease("adult-income", "1", "test", graph.SerializeToString()))
    assert list(scorer.columns) == SCHEMA.feature_columns  # one (n, 1) input per column
    for rows in (1, 7, len(test[0])):
        frame = test[0].head(rows)
        feed = to_feed(frame, SCHEMA)
        labels, probabilities = scorer.session.run(["label", "probabilities"], feed)
        assert probabilities.shape == (rows, 2)
        assert np.abs(probabilities - model.predict_proba(frame)).max() < 1e-5
        assert np.array_equal(labels, model.predict(frame))


def test_the_digits_network_exports_with_pixel_columns_and_passes_allclose() -> None:
    frame = digits_frame()
    parts = split_frame(frame, "digit", TabularConfig().split)
    network = NeuralClassifier("cnn", {"max_epochs": 3}, 0, "cpu").fit(
        *features(parts.train), valid=features(parts.valid)
    )
    graph = join(concat_front(PIXELS), "pixels", network_graph(network.network(), 64, 17))
    assert [i.name for i in graph.graph.input] == PIXELS
    test = parts.test
    feed = {name: test[[name]].to_numpy(dtype=np.float32) for name in PIXELS}
    parity = allclose_parity(graph, feed, network.predict_proba(test[PIXELS]), 1e-3, 1e-5)
    assert parity["passed"] and parity["rows"] == len(test) and parity["label_agreement"] == 1.0
    # A gate that cannot be met is reported as failed, not passed.
    strict = allclose_parity(graph, feed, network.predict_proba(test[PIXELS]) + 1e-3, 0, 1e-6)
    assert not strict["passed"]


def test_a_network_in_a_pipeline_survives_mlflows_skops_format(adult, tmp_path) -> None:
    import skops.io

    pre, *_ = adult
    model = Pipeline([("preprocess", pre), ("model", _fit(adult))])
    path = tmp_path / "model.skops"
    skops.io.dump(model, path)
    loaded = skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
    rows = adult[3][0].head(20)
    assert np.array_equal(loaded.predict_proba(rows), model.predict_proba(rows))
