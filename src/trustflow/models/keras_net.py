"""Keras 3 networks: the tabular candidate ``keras_mlp`` and the digits CNN under
``model.framework: keras``, on the torch backend, so Keras adds no TensorFlow to the install
(``KERAS_BACKEND`` chooses another backend when it is set).

:class:`KerasClassifier` is the Keras twin of :class:`~trustflow.models.neural.NeuralClassifier`:
a scikit-learn classifier with the same fitted attributes (``spec_``, ``history_``,
``best_epoch_``, ``warm_start_``...), so evaluation, the fairness audit, the registry and the
serving path treat both alike. Its fitted state is plain NumPy (the layer weights); the Keras
model is rebuilt from it on first use.

- Deterministic for a seed: every initialiser has its own seed, and each epoch's batch order
  comes from the estimator's own NumPy generator (one ``fit`` call per epoch, unshuffled), never
  a global RNG, so a Keras and a Lightning network training in parallel threads do not disturb
  each other.
- Layers are named explicitly: Keras numbers unnamed layers from a process-wide counter, which
  would put a different name into every trained model (and its hash).
- Early stopping on the validation loss; the best epoch's weights are kept.
- The CNN has the Lightning CNN's architecture and augmentation (random shifts), so the two
  frameworks compete on equal terms.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trustflow.errors import ConfigError
from trustflow.models.kinds import CnnParams, KerasMlpParams, Params
from trustflow.models.neural import NetworkClassifier, WarmStart, resolve_accelerator

ARCHITECTURE_PARAMS: dict[str, type[Params]] = {"mlp": KerasMlpParams, "cnn": CnnParams}


def keras_module() -> Any:
    """Keras, on the torch backend unless ``KERAS_BACKEND`` names another."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    return keras


def build_keras_network(spec: dict[str, Any], seed: int = 0) -> Any:
    """The Keras model for an architecture spec: probabilities out (softmax)."""
    keras = keras_module()
    layers = keras.layers
    seeds = iter(range(seed, seed + 100))

    def init() -> Any:
        return keras.initializers.GlorotUniform(seed=next(seeds))

    inputs = keras.Input(shape=(spec["inputs"],), name="features")
    x = inputs
    if spec["kind"] == "keras_cnn":
        height, width = spec["image"]
        x = layers.Reshape((height, width, 1), name="image")(x)
        for i, channels in enumerate(spec["channels"]):
            x = layers.Conv2D(
                channels, 3, padding="same", activation="relu", kernel_initializer=init(),
                name=f"conv_{i}",
            )(x)  # fmt: skip
        x = layers.MaxPooling2D(2, name="pool")(x)
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(spec["dense"], activation="relu", kernel_initializer=init(), name="dense")(
            x
        )
    else:
        for i, units in enumerate(spec["hidden"]):
            x = layers.Dense(
                units, activation="relu", kernel_initializer=init(), name=f"hidden_{i}"
            )(x)
    outputs = layers.Dense(
        spec["classes"], activation="softmax", kernel_initializer=init(), name="probabilities"
    )(x)
    return keras.Model(inputs, outputs, name=spec["kind"])


def _shift_images(x: np.ndarray, image: list[int], shift: int, rng: np.random.Generator) -> Any:
    """Augmentation: translate each image by up to ``shift`` pixels (zero padding), as the
    Lightning CNN does."""
    if shift <= 0:
        return x
    height, width = image
    images = x.reshape(-1, height, width)
    padded = np.pad(images, ((0, 0), (shift, shift), (shift, shift)))
    offsets = rng.integers(0, 2 * shift + 1, size=(len(images), 2))
    rows = np.arange(height)[None, :, None] + offsets[:, 0, None, None]
    cols = np.arange(width)[None, None, :] + offsets[:, 1, None, None]
    shifted = padded[np.arange(len(images))[:, None, None], rows, cols]
    return shifted.reshape(x.shape)


@dataclass(frozen=True)
class Transfer:
    """Transfer learning: a network trained on a source task gives its backbone (every layer
    but the output layer); the backbone is frozen for ``freeze_epochs`` while the new head
    learns, then the whole network trains at ``fine_tune_learning_rate``."""

    source: WarmStart
    freeze_epochs: int = 5


def _take_backbone(model: Any, transfer: Transfer, spec: dict[str, Any]) -> dict[str, Any]:
    """Copy the source's backbone into ``model`` and freeze it; what was taken, for the record."""
    source = transfer.source
    differs = sorted(k for k in spec if k != "classes" and source.spec.get(k) != spec[k])
    if differs:
        raise ConfigError(
            f"transfer: {source.source} has another backbone ("
            + ", ".join(f"{k} {source.spec.get(k)} vs {spec[k]}" for k in differs)
            + ")"
        )
    trained = build_keras_network(source.spec)
    trained.set_weights([source.state[str(i)] for i in range(len(source.state))])
    # The new head starts at zero (uniform probabilities): a random head on the large features a
    # trained backbone gives starts far too sure and wrong (a loss of 7.7 where uniform is 2.3
    # on ten digits), and its first steps are spent undoing that.
    head = model.get_layer("probabilities")
    head.set_weights([np.zeros_like(w) for w in head.get_weights()])
    frozen = []
    for layer in model.layers:
        if layer.name == "probabilities" or not layer.weights:
            continue
        layer.set_weights(trained.get_layer(layer.name).get_weights())
        layer.trainable = False
        frozen.append(layer.name)
    return {"source": source.source, "frozen": frozen, "frozen_epochs": transfer.freeze_epochs}


class KerasClassifier(NetworkClassifier):
    """A Keras-trained network as a scikit-learn classifier (labels 0..classes-1)."""

    architectures = ARCHITECTURE_PARAMS
    label = "keras_{kind}"

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        valid: tuple[np.ndarray, np.ndarray],
        loggers: Sequence[Any] = (),
        warm: WarmStart | None = None,
        transfer: Transfer | None = None,
    ) -> KerasClassifier:
        """``loggers``: Lightning loggers (``log_metrics(metrics, step)``), so a Keras network's
        epochs land in TensorBoard where the Lightning networks' do. ``transfer``: start from
        another task's network (its backbone frozen first), instead of ``warm``."""
        keras = keras_module()
        settings = self._settings()
        x = np.asarray(x, dtype=np.float32)
        y = np.asarray(y, dtype=np.int64)
        valid_x = np.asarray(valid[0], dtype=np.float32)
        valid_y = np.asarray(valid[1], dtype=np.int64)
        classes = max(int(max(y.max(), valid_y.max())) + 1, self.classes or 0)
        spec: dict[str, Any] = {
            "kind": f"keras_{self.kind}",
            "inputs": int(x.shape[1]),
            "classes": classes,
        }
        if self.kind == "mlp":
            spec["hidden"] = [int(h) for h in settings["hidden"]]
        else:
            spec.update(
                channels=[int(c) for c in settings["channels"]],
                dense=int(settings["dense"]),
                image=[int(s) for s in settings["image"]],
            )
            if spec["image"][0] * spec["image"][1] != spec["inputs"]:
                raise ConfigError(f"cnn: image {spec['image']} does not hold {x.shape[1]} inputs")
        shift = int(settings.get("shift", 0))
        device = resolve_accelerator(self.accelerator)
        rng = np.random.default_rng(self.seed)
        frozen_epochs = transfer.freeze_epochs if transfer is not None else 0
        with keras.device(device):
            model = build_keras_network(spec, self.seed)
            self.warm_start_ = {"source": None, "reason": "no warm-start source"}
            self.transfer_: dict[str, Any] | None = None
            learning_rate = settings["learning_rate"]
            if transfer is not None:
                self.transfer_ = _take_backbone(model, transfer, spec)
                self.warm_start_["reason"] = "transfer learning instead"
            elif warm is not None:
                if warm.spec == spec:
                    model.set_weights([warm.state[str(i)] for i in range(len(warm.state))])
                    self.warm_start_ = {"source": warm.source, "reason": "same architecture"}
                    learning_rate = settings["fine_tune_learning_rate"]
                else:
                    self.warm_start_ = {
                        "source": None,
                        "reason": f"cold start: {warm.source} has another architecture",
                    }

            def compile_at(rate: float) -> None:
                model.compile(
                    optimizer=keras.optimizers.AdamW(
                        learning_rate=rate, weight_decay=settings["weight_decay"]
                    ),
                    loss="sparse_categorical_crossentropy",
                    metrics=["accuracy"],
                )

            compile_at(learning_rate)
            history: list[dict[str, float]] = []
            timings: list[dict[str, float]] = []
            best: tuple[float, int, list[np.ndarray]] | None = None
            started = time.perf_counter()
            for epoch in range(1, int(settings["max_epochs"]) + 1):
                if transfer is not None and epoch == frozen_epochs + 1:
                    # The head has learnt the new task: now the whole network, more gently.
                    for layer in model.layers:
                        layer.trainable = True
                    compile_at(settings["fine_tune_learning_rate"])
                epoch_started = time.perf_counter()
                order = rng.permutation(len(y))
                batch_x = (
                    x[order]
                    if self.kind == "mlp"
                    else _shift_images(x[order], spec["image"], shift, rng)
                )
                fitted = model.fit(
                    batch_x, y[order], batch_size=int(settings["batch_size"]),
                    epochs=1, shuffle=False, verbose=0,
                )  # fmt: skip
                scores = model.evaluate(
                    valid_x, valid_y, batch_size=4096, verbose=0, return_dict=True
                )
                loss = float(scores["loss"])
                if not np.isfinite(loss):
                    raise ConfigError(
                        f"{spec['kind']}: the validation loss is {loss} at epoch {epoch}; "
                        "lower params.learning_rate"
                    )
                record = {
                    "epoch": epoch,
                    "train_loss": float(fitted.history["loss"][-1]),
                    "val_loss": loss,
                    "val_accuracy": float(scores["accuracy"]),
                }
                history.append(record)
                timings.append(
                    {
                        "epoch_seconds": time.perf_counter() - epoch_started,
                        "elapsed_seconds": time.perf_counter() - started,
                    }
                )
                for logger in loggers:
                    logger.log_metrics({k: v for k, v in record.items() if k != "epoch"}, epoch)
                if best is None or loss < best[0] or math.isnan(best[0]):
                    best = (loss, epoch, [np.array(w) for w in model.get_weights()])
                # Early stopping waits for the unfrozen phase (when transfer learning).
                elif epoch - max(best[1], frozen_epochs) >= int(settings["patience"]):
                    break
        for logger in loggers:
            logger.finalize("success")
        assert best is not None  # at least one epoch ran
        self._converged(best[0], float(settings["learning_rate"]))
        self.spec_ = spec
        self.state_ = {str(i): w for i, w in enumerate(best[2])}
        self.classes_ = np.arange(classes)
        self.history_ = history
        self.timings_ = timings
        self.best_epoch_ = best[1]
        self.best_val_loss_ = best[0]
        self.device_ = device
        return self

    def network(self) -> Any:
        """The fitted Keras model, built once per estimator."""
        model = self.__dict__.get("_network")
        if model is None:
            with keras_module().device("cpu"):
                model = build_keras_network(self.spec_)
                model.set_weights([self.state_[str(i)] for i in range(len(self.state_))])
            self.__dict__["_network"] = model
        return model

    def predict_proba(self, x: Any) -> np.ndarray:
        keras = keras_module()
        values = np.asarray(x, dtype=np.float32)
        with keras.device("cpu"):
            probabilities = keras.ops.convert_to_numpy(self.network()(values, training=False))
        probabilities = probabilities.astype(np.float64)
        return np.asarray(probabilities / probabilities.sum(axis=1, keepdims=True))
