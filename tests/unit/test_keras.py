"""The Keras networks in the core: torch backend, determinism (also beside a Lightning network
in another thread, as the thread runner trains them), early stopping, warm start, transfer
learning (frozen, then fine-tuned), and the ONNX form through Keras' exporter, served by the
inference server's scorer."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import skops.io
from sklearn.pipeline import Pipeline

from trustflow.config import CandidateConfig, OnnxConfig, TabularConfig
from trustflow.data.digits import digits_frame, features
from trustflow.data.split import split_frame
from trustflow.errors import ConfigError
from trustflow.export.onnx import convert_pipeline, to_feed
from trustflow.io import dump_addressed
from trustflow.models.candidates import train_network
from trustflow.models.keras_net import KerasClassifier, Transfer, keras_module
from trustflow.models.neural import NeuralClassifier
from trustflow.serving.app import ModelRelease
from trustflow.serving.scorer import Scorer

FAST = {"hidden": [16], "max_epochs": 6, "patience": 2}
SCHEMA = TabularConfig().data.dataset


def _fit(adult, params=FAST, seed=0, warm=None) -> KerasClassifier:
    pre, train, valid, _ = adult
    network = KerasClassifier("mlp", params, seed, "cpu")
    return network.fit(
        pre.transform(train[0]), train[1], valid=(pre.transform(valid[0]), valid[1]), warm=warm
    )


def test_keras_runs_on_the_torch_backend_without_tensorflow() -> None:
    keras = keras_module()
    assert keras.backend.backend() == os.environ.get("KERAS_BACKEND", "torch") == "torch"
    # The install stays TensorFlow-free: nothing trustflow requires is TensorFlow.
    requirements = importlib.metadata.requires("trustflow") or []
    assert "keras" in " ".join(requirements)
    assert not [r for r in requirements if r.lower().startswith("tensorflow")]


def test_the_same_seed_gives_a_byte_identical_model_file_and_another_seed_does_not(
    adult, tmp_path
) -> None:
    first = dump_addressed(_fit(adult), tmp_path / "a", "keras")
    again = dump_addressed(_fit(adult), tmp_path / "b", "keras")
    other = dump_addressed(_fit(adult, seed=1), tmp_path / "c", "keras")
    assert first.path.read_bytes() == again.path.read_bytes()
    assert first.sha256 == again.sha256 != other.sha256


def test_training_beside_a_lightning_network_in_another_thread_changes_nothing(adult) -> None:
    """The thread runner trains candidates at once: neither network may draw from an RNG the
    other one moves."""
    pre, train, valid, _ = adult
    alone = _fit(adult)
    lightning_alone = NeuralClassifier("mlp", FAST, 0, "cpu").fit(
        pre.transform(train[0]), train[1], valid=(pre.transform(valid[0]), valid[1])
    )
    with ThreadPoolExecutor(2) as pool:
        keras_future = pool.submit(_fit, adult)
        lightning_future = pool.submit(
            NeuralClassifier("mlp", FAST, 0, "cpu").fit,
            pre.transform(train[0]),
            train[1],
            valid=(pre.transform(valid[0]), valid[1]),
        )
        beside, lightning_beside = keras_future.result(), lightning_future.result()
    assert all(np.array_equal(alone.state_[k], beside.state_[k]) for k in alone.state_)
    assert all(
        np.array_equal(lightning_alone.state_[k], lightning_beside.state_[k])
        for k in lightning_alone.state_
    )


def test_early_stopping_keeps_the_best_epoch_and_records_every_epoch(adult) -> None:
    network = _fit(adult, {**FAST, "max_epochs": 60, "patience": 1, "learning_rate": 0.05})
    history = network.history_
    assert 1 < len(history) < 60  # stopped early
    assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
    losses = [h["val_loss"] for h in history]
    assert network.best_epoch_ == int(np.argmin(losses)) + 1
    assert network.best_val_loss_ == pytest.approx(min(losses))
    assert len(network.epoch_seconds()) == len(history)
    # The kept weights are the best epoch's: they score the validation loss recorded for it.
    pre, _, valid, _ = adult
    probabilities = network.predict_proba(pre.transform(valid[0]))
    picked = probabilities[np.arange(len(valid[1])), valid[1]]
    assert -np.log(np.clip(picked, 1e-7, 1)).mean() == pytest.approx(network.best_val_loss_, 1e-4)


def test_a_warm_start_of_the_same_architecture_begins_where_the_source_ended(adult) -> None:
    source = _fit(adult)
    warm = source.warm_start("models:/adult-income/1")
    cold, tuned = _fit(adult, seed=3), _fit(adult, seed=3, warm=warm)
    assert tuned.warm_start_ == {"source": "models:/adult-income/1", "reason": "same architecture"}
    assert tuned.history_[0]["val_loss"] < cold.history_[0]["val_loss"]
    wider = _fit(adult, {**FAST, "hidden": [32]}, seed=3, warm=warm)
    assert wider.warm_start_["source"] is None
    assert wider.warm_start_["reason"].startswith("cold start: models:/adult-income/1 has another")


def test_unknown_keras_params_are_named() -> None:
    x, y = np.zeros((4, 3), dtype=np.float32), np.array([0, 1, 0, 1])
    with pytest.raises(ConfigError, match=r"keras_mlp: unknown param 'layers'; allowed: hidden"):
        KerasClassifier("mlp", {"layers": 3}).fit(x, y, valid=(x, y))


def test_the_keras_network_exports_through_keras_and_is_served_with_parity(adult) -> None:
    pre, train, valid, test = adult
    cfg = CandidateConfig(name="keras", kind="keras_mlp", params=FAST)
    model = train_network(pre, train, valid, cfg, 0, "cpu")
    graph = convert_pipeline(model, SCHEMA, OnnxConfig(), "network")
    scorer = Scorer(ModelRelease("adult-income", "1", "test", graph.SerializeToString()))
    assert list(scorer.columns) == SCHEMA.feature_columns
    for rows in (1, 7, len(test[0])):
        frame = test[0].head(rows)
        labels, probabilities = scorer.session.run(
            ["label", "probabilities"], to_feed(frame, SCHEMA)
        )
        assert probabilities.shape == (rows, 2)
        assert np.abs(probabilities - model.predict_proba(frame)).max() < 1e-5
        assert np.array_equal(labels, model.predict(frame))


def test_a_keras_network_in_a_pipeline_survives_mlflows_skops_format(adult, tmp_path) -> None:
    pre, *_ = adult
    model = Pipeline([("preprocess", pre), ("model", _fit(adult))])
    path = tmp_path / "model.skops"
    skops.io.dump(model, path)
    loaded = skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
    rows = adult[3][0].head(20)
    assert np.array_equal(loaded.predict_proba(rows), model.predict_proba(rows))


@pytest.mark.tensorflow
@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None,
    reason="TensorFlow is not installed (the default install has none): "
    "`pip install tensorflow-cpu` to check KERAS_BACKEND=tensorflow",
)
def test_the_tensorflow_backend_trains_the_same_candidate(tmp_path) -> None:
    """The backend is chosen when Keras is first imported, so this runs in its own process."""
    script = (
        "import numpy as np\n"
        "from trustflow.models.keras_net import KerasClassifier, Transfer, keras_module\n"
        "assert keras_module().backend.backend() == 'tensorflow'\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.normal(size=(400, 4)).astype('float32'); y = (x[:, 0] > 0).astype(int)\n"
        "params = {'hidden': [8], 'max_epochs': 20, 'batch_size': 32}\n"
        "m = KerasClassifier('mlp', params, 0, 'cpu')\n"
        "m.fit(x, y, valid=(x, y))\n"
        "print((m.predict(x) == y).mean())\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip().splitlines()[-1]) > 0.9


def _digits_tasks(seed: int = 0):
    frame = digits_frame()
    parts = split_frame(frame, "digit", TabularConfig().split.model_copy(update={"seed": seed}))
    source, target = (lambda f: f[f["digit"] < 5]), (lambda f: f[f["digit"] >= 5])
    return parts, source, target


def test_transfer_freezes_the_source_backbone_and_then_fine_tunes_all_of_it() -> None:
    parts, source, target = _digits_tasks()
    short = {"max_epochs": 3}
    pretrained = KerasClassifier("cnn", short, 0, "cpu", 10).fit(
        *features(source(parts.train)), valid=features(source(parts.valid))
    )
    start = Transfer(pretrained.warm_start("models:/digits-0to4/1"), freeze_epochs=2)
    labelled = features(target(parts.train).sample(frac=0.1, random_state=0))
    valid = features(target(parts.valid))
    frozen_only = KerasClassifier("cnn", {"max_epochs": 2}, 0, "cpu", 10).fit(
        *labelled, valid=valid, transfer=start
    )
    tuned = KerasClassifier("cnn", {"max_epochs": 6, "patience": 6}, 0, "cpu", 10).fit(
        *labelled, valid=valid, transfer=start
    )
    assert tuned.transfer_ == {
        "source": "models:/digits-0to4/1",
        "frozen": ["conv_0", "conv_1", "dense"],
        "frozen_epochs": 2,
    }

    def layer(network: KerasClassifier, name: str) -> np.ndarray:
        return np.concatenate([w.ravel() for w in network.network().get_layer(name).get_weights()])

    for name in ("conv_0", "conv_1", "dense"):
        # While frozen the backbone is the source's, to the bit; afterwards it trains too.
        assert np.array_equal(layer(pretrained, name), layer(frozen_only, name))
        assert not np.array_equal(layer(pretrained, name), layer(tuned, name))
    # The head is new: it learns the target task from the start.
    assert not np.array_equal(
        layer(pretrained, "probabilities"), layer(frozen_only, "probabilities")
    )


def test_transfer_from_another_backbone_is_refused_naming_the_difference() -> None:
    parts, source, target = _digits_tasks()
    pretrained = KerasClassifier("cnn", {"max_epochs": 1, "dense": 32}, 0, "cpu", 10).fit(
        *features(source(parts.train)), valid=features(source(parts.valid))
    )
    start = Transfer(pretrained.warm_start("models:/digits-0to4/1"))
    with pytest.raises(
        ConfigError, match=r"models:/digits-0to4/1 has another backbone \(dense 32 vs 64\)"
    ):
        KerasClassifier("cnn", {"max_epochs": 1}, 0, "cpu", 10).fit(
            *features(target(parts.train)), valid=features(target(parts.valid)), transfer=start
        )
