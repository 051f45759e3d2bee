"""Neural candidates on PyTorch Lightning: a tabular MLP over the shared preprocessing, and a
small CNN for 8x8 images.

:class:`NeuralClassifier` is a scikit-learn estimator (``fit``, ``predict_proba``), so the
pipeline evaluates, audits, explains and registers it like any other candidate. Its fitted state
is plain NumPy (the network's weights), which MLflow's skops format stores without pickle.

- Deterministic for a seed: weights are initialised and batches shuffled (and augmented) from
  the estimator's own ``torch.Generator``, never the global RNG, so two networks training in
  parallel threads do not disturb each other; no dropout.
- Early stopping on the validation loss (``patience`` epochs without improvement); the weights
  of the best epoch are kept.
- Loggers are injected (``loggers=``: the tasks layer passes a TensorBoard logger); every
  epoch's metrics are also kept in ``history_``, which the tracking stage logs to MLflow.
- The pickled estimator is a function of data, params and seed alone: wall-clock epoch times
  live in ``timings_``, which is not pickled, so retraining gives byte-identical files and the
  content hash that names the model holds for networks too.
- Warm start: :class:`WarmStart` weights of the same architecture initialise the network
  (fine-tuning); any other architecture starts cold, and ``warm_start_`` says why.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import ValidationError
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from trustflow.errors import ConfigError
from trustflow.models.kinds import (
    CnnParams,
    DpLogisticRegressionParams,
    MlpParams,
    Params,
    params_problem_of,
)
from trustflow.privacy.dpsgd import DpSgdPlan, batches_per_epoch, spent_epsilon

Accelerator = Literal["auto", "cpu", "cuda"]
# "linear": an MLP with no hidden layer (the DP-SGD logistic regression).
ARCHITECTURE_PARAMS: dict[str, type[Params]] = {
    "mlp": MlpParams,
    "cnn": CnnParams,
    "linear": DpLogisticRegressionParams,
}


@dataclass(frozen=True)
class WarmStart:
    """Weights to start from: a registered version's network."""

    source: str  # models:/NAME/VERSION
    spec: dict[str, Any]  # the architecture (NeuralClassifier.spec_)
    state: dict[str, np.ndarray]


def resolve_accelerator(requested: Accelerator) -> str:
    """``cuda`` when asked for and present (or ``auto`` and present), else ``cpu``; asking for
    CUDA on a machine without it is a config error, never a hang or a silent fallback."""
    import torch

    available = torch.cuda.is_available()
    if requested == "cuda" and not available:
        raise ConfigError(
            "trainer.accelerator = cuda, but no CUDA device is available (torch "
            f"{torch.__version__}, torch.cuda.is_available() is False); use auto or cpu"
        )
    return "cuda" if requested != "cpu" and available else "cpu"


def _quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # Opacus: its advice to use torchcsprng (our noise is seeded from the OS's secret
    # randomness instead), and a hook note about inputs that need no gradient.
    warnings.filterwarnings("ignore", message=".*Secure RNG turned off.*")
    warnings.filterwarnings("ignore", message=".*Full backward hook is firing.*")
    warnings.filterwarnings("ignore", message=".*Optimal order is the largest alpha.*")


# Also once on import, in the thread that imports (the flow's, before any task runs). Called only
# from a training thread, the filters could be undone: `warnings.catch_warnings()` in another
# thread (an export) restores the filter list it saved on entry, and a `--quiet` run then printed
# Lightning's LeafSpec deprecation (seen once in CI).
_quiet_lightning()


def build_network(spec: dict[str, Any]) -> Any:
    """The torch module for an architecture spec: logits out."""
    from torch import nn

    if spec["kind"] == "mlp":
        layers: list[nn.Module] = []
        numeric = int(spec.get("numeric", 0))
        width = spec["inputs"]
        if numeric and spec.get("periodic"):
            layers.append(_periodic_class()(numeric, **spec["periodic"]))
            width = spec["inputs"] - numeric + numeric * spec["periodic"]["width"]
        for hidden in spec["hidden"]:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, spec["classes"]))
        if "target" in spec:  # a regressor: its one output back in the target's units
            layers.append(_rescale_class()(*spec["target"]))
        return nn.Sequential(*layers)
    height, width = spec["image"]
    first, second = spec["channels"]
    return nn.Sequential(
        nn.Unflatten(1, (1, height, width)),
        nn.Conv2d(1, first, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(first, second, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(second * (height // 2) * (width // 2), spec["dense"]),
        nn.ReLU(),
        nn.Linear(spec["dense"], spec["classes"]),
    )


@cache
def _rescale_class() -> Any:
    """Defined on first use, like Periodic: ``mean + std * x``, fixed (not learnt)."""
    import torch
    from torch import nn

    class Rescale(nn.Module):
        """A regressor learns the standardised target; this layer gives its value in the
        target's units, so the ONNX graph and ``predict`` need nothing after the network."""

        def __init__(self, mean: float, std: float) -> None:
            super().__init__()
            self.mean, self.std = float(mean), float(std)  # in the spec, not the weights

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.mean + self.std * x

    return Rescale


@cache
def _periodic_class() -> Any:
    """Defined on first use: the core imports torch only when a network is built."""
    import torch
    from torch import nn

    class Periodic(nn.Module):
        """Periodic embeddings of the numeric inputs (Gorishniy et al., 2022, "PLR"): each
        standardised number x becomes ReLU(W [sin(2 pi c x), cos(2 pi c x)]) with learned
        frequencies c, which lets an MLP fit the sharp, heavy-tailed effects (capital gain,
        age) that trees find easily. The one-hot columns pass through unchanged."""

        def __init__(self, numeric: int, frequencies: int, width: int, sigma: float) -> None:
            super().__init__()
            self.numeric, self.sigma = numeric, sigma
            self.frequencies = nn.Parameter(torch.zeros(numeric, frequencies))
            self.weight = nn.Parameter(torch.empty(numeric, 2 * frequencies, width))
            self.bias = nn.Parameter(torch.zeros(numeric, width))

        def initialise(self, generator: torch.Generator) -> None:
            with torch.no_grad():
                self.frequencies.normal_(0, self.sigma, generator=generator)
                self.weight.uniform_(-0.1, 0.1, generator=generator)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            numbers, rest = x[:, : self.numeric], x[:, self.numeric :]
            angles = 2 * torch.pi * numbers.unsqueeze(-1) * self.frequencies
            periodic = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
            embedded = torch.relu(torch.einsum("bnf,nfw->bnw", periodic, self.weight) + self.bias)
            return torch.cat([embedded.flatten(1), rest], dim=1)

    return Periodic


def _initialise(network: Any, generator: Any) -> None:
    """Kaiming-uniform weights (PyTorch's default scheme) from our own generator; a layer with
    its own scheme (``initialise``) uses that."""
    import math

    import torch

    for module in network.modules():
        if hasattr(module, "initialise"):
            module.initialise(generator)
            continue
        weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
        if weight is None:
            continue
        torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
        if bias is not None:
            fan_in = weight[0].numel()
            bound = 1 / math.sqrt(fan_in)
            torch.nn.init.uniform_(bias, -bound, bound, generator=generator)


def _shift_images(batch: Any, spec: dict[str, Any], shift: int, generator: Any) -> Any:
    """Augmentation: translate each image by up to ``shift`` pixels (zero padding)."""
    import torch
    import torch.nn.functional as F

    if shift <= 0:
        return batch
    height, width = spec["image"]
    images = batch.view(-1, 1, height, width)
    padded = F.pad(images, (shift, shift, shift, shift))
    # Drawn on the CPU from our generator, then moved to the batch's device.
    offsets = torch.randint(0, 2 * shift + 1, (images.shape[0], 2), generator=generator)
    rows = torch.arange(height).view(1, height, 1) + offsets[:, 0].view(-1, 1, 1)
    cols = torch.arange(width).view(1, 1, width) + offsets[:, 1].view(-1, 1, 1)
    index = torch.arange(images.shape[0]).view(-1, 1, 1)
    device = batch.device
    shifted = padded[index.to(device), 0, rows.to(device), cols.to(device)]
    return shifted.reshape(batch.shape)


def _lightning_module(
    network: Any,
    params: dict[str, Any],
    spec: dict[str, Any],
    gen: Any,
    private: tuple[Any, Any] | None = None,
) -> Any:
    """The LightningModule around ``network``. ``private``: Opacus' (GradSampleModule,
    DPOptimizer) for it, made before ``fit``: the module computes per-sample gradients, the
    optimizer clips and noises them (Poisson sampling stays in the DP data loader)."""
    import lightning as L
    import torch
    import torch.nn.functional as F

    class Classifier(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.network = network
            # Not a registered submodule: it shares the network's parameters, and the best
            # epoch's weights are the network's own state dict.
            self.__dict__["per_sample"] = private[0] if private else network

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            per_sample: Any = self.per_sample
            logits: torch.Tensor = per_sample(x)
            return logits

        def loss(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            if "target" not in spec:
                return F.cross_entropy(output, y)
            # A regressor: squared error in standard deviations of the target.
            std = float(spec["target"][1])
            return F.mse_loss(output.reshape(-1) / std, y / std)

        def training_step(self, batch: Any, _: int) -> torch.Tensor:
            x, y = batch
            if spec["kind"] == "cnn":
                x = _shift_images(x, spec, int(params.get("shift", 0)), gen)
            loss = self.loss(self(x), y)
            self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
            return loss

        def validation_step(self, batch: Any, _: int) -> None:
            x, y = batch
            output = self(x)
            self.log("val_loss", self.loss(output, y), batch_size=len(y))
            if "target" not in spec:
                accuracy = (output.argmax(dim=1) == y).float().mean()
                self.log("val_accuracy", accuracy, batch_size=len(y))

        def configure_optimizers(self) -> Any:
            if private:
                return private[1]
            return torch.optim.AdamW(
                self.parameters(),
                lr=float(params["learning_rate"]),
                weight_decay=float(params["weight_decay"]),
            )

    return Classifier()


def _callbacks(patience: int) -> tuple[Any, list[Any]]:
    import copy

    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping

    class Record(L.Callback):
        """Every epoch's metrics and (apart from them) its time, and the best epoch's weights."""

        def __init__(self) -> None:
            self.history: list[dict[str, float]] = []
            self.timings: list[dict[str, float]] = []
            self.best: tuple[float, int, dict[str, Any]] | None = None
            self.started = time.perf_counter()

        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            self.epoch_started = time.perf_counter()

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            loss = metrics["val_loss"]
            self.history.append(
                {
                    "epoch": trainer.current_epoch + 1,
                    "train_loss": metrics.get("train_loss", float("nan")),
                    "val_loss": loss,
                    "val_accuracy": metrics.get("val_accuracy", float("nan")),
                }
            )
            self.timings.append(
                {
                    "epoch_seconds": time.perf_counter() - self.epoch_started,
                    "elapsed_seconds": time.perf_counter() - self.started,
                }
            )
            if self.best is None or loss < self.best[0] or math.isnan(self.best[0]):
                state = copy.deepcopy(module.network.state_dict())
                self.best = (loss, trainer.current_epoch + 1, state)

    record = Record()
    stop = EarlyStopping(monitor="val_loss", patience=patience, mode="min", check_finite=True)
    return record, [record, stop]


def _loader(x: np.ndarray, y: np.ndarray, batch: int, shuffle: bool, gen: Any) -> Any:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    # Copies: arrays read from parquet can be read-only, which torch will not wrap.
    data = TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y))
    return DataLoader(data, batch_size=batch, shuffle=shuffle, generator=gen, num_workers=0)


class NetworkClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """What every trained network shares, whatever its framework: the scikit-learn surface, the
    params check, the fitted attributes (``spec_``, ``state_``, ``history_``, ``timings_``...) and
    how it is pickled. Subclasses train (``fit``) and run (``network``, ``predict_proba``)."""

    architectures: ClassVar[dict[str, type[Params]]] = {}  # kind -> its params model
    label: ClassVar[str] = "{kind}"  # how errors name the network

    def __init__(
        self,
        kind: Literal["mlp", "cnn", "linear"] = "mlp",
        params: dict[str, Any] | None = None,
        seed: int = 0,
        accelerator: Accelerator = "auto",
        classes: int | None = None,
    ) -> None:
        self.kind = kind
        self.params = params
        self.seed = seed
        self.accelerator = accelerator
        # How many outputs at least: a task whose labels are some of the classes (digits 0-4)
        # still answers in the whole label space its ONNX metadata names.
        self.classes = classes

    def _settings(self) -> dict[str, Any]:
        model = self.architectures[self.kind]
        try:
            return model.model_validate(self.params or {}).model_dump()
        except ValidationError as exc:
            name = self.label.format(kind=self.kind)
            raise ConfigError(f"{name}: {params_problem_of(model, exc)}") from exc

    def network(self) -> Any:
        raise NotImplementedError

    def _converged(self, best_loss: float, learning_rate: float) -> None:
        """A network whose validation loss was never a finite number has learnt nothing."""
        if not math.isfinite(best_loss):
            name = self.label.format(kind=self.kind)
            raise FloatingPointError(
                f"{name} diverged: its validation loss was never finite; lower "
                f"params.learning_rate (now {learning_rate:g})"
            )

    def predict_proba(self, x: Any) -> np.ndarray:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # a copy: object's own is the live __dict__
        state.pop("_network", None)  # rebuilt from state_ on first use
        state.pop("timings_", None)  # wall-clock times would make equal models hash apart
        return state

    def predict(self, x: Any) -> np.ndarray:
        return np.asarray(self.classes_[self.predict_proba(x).argmax(axis=1)])

    def epoch_seconds(self) -> list[float]:
        """Each epoch's wall-clock time, from this fit (not kept when the model is pickled)."""
        return [t["epoch_seconds"] for t in getattr(self, "timings_", [])]

    def warm_start(self, source: str) -> WarmStart:
        """This network's weights, as the starting point of a later fit."""
        return WarmStart(source=source, spec=self.spec_, state=self.state_)


def _make_private(
    network: Any, settings: dict[str, Any], loader: Any, plan: DpSgdPlan, device: str
) -> tuple[Any, tuple[Any, Any]]:
    """Opacus around the network, its optimizer and its training loader, with the plan's noise
    multiplier (not recalibrated: the ledger recorded this plan).

    The batches' Poisson sampling and the noise draw from generators seeded from the operating
    system's secret randomness, never from ``seed`` (which only initialises the weights): a seed
    anyone can read would let them subtract the noise, and the guarantee assumes they cannot. So
    two trainings are two releases; a rerun reuses the first through Prefect's cache.
    """
    import secrets

    import torch
    from opacus import PrivacyEngine
    from opacus.data_loader import switch_generator

    rows = len(loader.dataset)
    if rows != plan.rows or abs(1 / len(loader) - plan.sample_rate) > 1e-12:
        raise ValueError(
            f"DP-SGD plan for {plan.rows:,} rows at q = {plan.sample_rate:.4g} does not match "
            f"the {rows:,} training rows at q = {1 / len(loader):.4g}"
        )
    optimizer = torch.optim.AdamW(
        network.parameters(),
        lr=float(settings["learning_rate"]),
        weight_decay=float(settings["weight_decay"]),
    )
    sampling = torch.Generator().manual_seed(secrets.randbits(63))
    loader = switch_generator(data_loader=loader, generator=sampling)
    noise = torch.Generator(device=device).manual_seed(secrets.randbits(63))
    engine = PrivacyEngine(accountant=plan.accountant)
    per_sample, dp_optimizer, dp_loader = engine.make_private(
        module=network,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.max_grad_norm,
        poisson_sampling=True,
        noise_generator=noise,
    )
    return dp_loader, (per_sample, dp_optimizer)


class NeuralClassifier(NetworkClassifier):
    """A Lightning-trained network as a scikit-learn classifier (labels 0..classes-1)."""

    architectures = ARCHITECTURE_PARAMS
    regression: ClassVar[bool] = False
    target_dtype: ClassVar[Any] = np.int64

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        valid: tuple[np.ndarray, np.ndarray],
        loggers: Sequence[Any] = (),
        warm: WarmStart | None = None,
        dp: DpSgdPlan | None = None,
    ) -> NeuralClassifier:
        """``dp``: train by DP-SGD with exactly this plan's noise, clipping and sampling rate
        (privacy.mode: training); ``privacy_`` then records it and the ε at the epoch it
        stopped."""
        import lightning as L
        import torch

        _quiet_lightning()
        settings = self._settings()
        x = np.asarray(x, dtype=np.float32)
        y = np.asarray(y, dtype=self.target_dtype)
        if self.regression:
            classes = 1
        else:
            seen = int(max(y.max(), np.asarray(valid[1]).max())) + 1
            classes = max(seen, self.classes or 0)
        spec: dict[str, Any] = {"kind": self.kind, "inputs": int(x.shape[1]), "classes": classes}
        if self.regression:  # standardised while it learns, rescaled by its last layer
            spec["target"] = [float(y.mean()), float(y.std()) or 1.0]
        if self.kind == "linear":
            spec.update(kind="mlp", hidden=[])
        elif self.kind == "mlp":
            spec["hidden"] = [int(h) for h in settings["hidden"]]
            if settings["numeric"] and dp is None:
                spec["numeric"] = int(settings["numeric"])
                spec["periodic"] = dict(settings["periodic"])
        else:
            spec.update(
                channels=[int(c) for c in settings["channels"]],
                dense=int(settings["dense"]),
                image=[int(s) for s in settings["image"]],
            )
            if spec["image"][0] * spec["image"][1] != spec["inputs"]:
                raise ConfigError(f"cnn: image {spec['image']} does not hold {x.shape[1]} inputs")
        device = resolve_accelerator(self.accelerator)
        generator = torch.Generator().manual_seed(self.seed)
        network = build_network(spec)
        _initialise(network, generator)
        self.warm_start_ = {"source": None, "reason": "no warm-start source"}
        if warm is not None:
            if warm.spec == spec:
                network.load_state_dict({k: torch.as_tensor(v) for k, v in warm.state.items()})
                self.warm_start_ = {"source": warm.source, "reason": "same architecture"}
                settings["learning_rate"] = settings["fine_tune_learning_rate"]
            else:
                differs = sorted(k for k in spec if warm.spec.get(k) != spec[k])
                self.warm_start_ = {
                    "source": None,
                    "reason": f"cold start: {warm.source} has another architecture ("
                    + ", ".join(f"{k} {warm.spec.get(k)} vs {spec[k]}" for k in differs)
                    + ")",
                }
        batch = int(settings["batch_size"])
        train_loader = _loader(x, y, batch, shuffle=True, gen=generator)
        private = None
        if dp is not None:
            train_loader, private = _make_private(network, settings, train_loader, dp, device)
        module = _lightning_module(network, settings, spec, generator, private)
        record, callbacks = _callbacks(int(settings["patience"]))
        trainer = L.Trainer(
            accelerator=device,
            devices=1,
            max_epochs=int(settings["max_epochs"]),
            # On a GPU some kernels (max-pool backward) have no deterministic form: warn there
            # instead of refusing to train.
            deterministic=True if device == "cpu" else "warn",
            logger=list(loggers) or False,
            callbacks=callbacks,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            log_every_n_steps=1,
        )
        valid_x = np.asarray(valid[0], dtype=np.float32)
        valid_y = np.asarray(valid[1], dtype=self.target_dtype)
        trainer.fit(module, train_loader, _loader(valid_x, valid_y, 4096, shuffle=False, gen=None))
        assert record.best is not None  # at least one epoch ran
        best_loss, best_epoch, best_state = record.best
        self._converged(best_loss, float(settings["learning_rate"]))
        self.spec_ = spec
        self.state_ = {k: v.detach().cpu().numpy().copy() for k, v in best_state.items()}
        if not self.regression:
            self.classes_ = np.arange(classes)
        self.history_ = record.history
        self.timings_ = record.timings
        self.best_epoch_ = best_epoch
        self.best_val_loss_ = float(best_loss)
        self.device_ = device
        self.privacy_ = None
        if dp is not None:
            # The weights kept are the best epoch's: the steps up to it are what they saw.
            steps = best_epoch * batches_per_epoch(len(y), batch)
            self.privacy_ = {
                **dp.model_dump(),
                "best_epoch": best_epoch,
                "steps_to_best": steps,
                "epsilon_at_best": spent_epsilon(dp, steps),
            }
        return self

    def network(self) -> Any:
        """The fitted network (logits), on the CPU, in eval mode; built once per estimator."""
        import torch

        network = self.__dict__.get("_network")
        if network is None:
            network = build_network(self.spec_)
            network.load_state_dict({k: torch.as_tensor(v) for k, v in self.state_.items()})
            network = self.__dict__["_network"] = network.eval()
        return network

    def predict_proba(self, x: Any) -> np.ndarray:
        import torch

        values = np.array(x, dtype=np.float32)  # a writable copy: torch wraps it
        network = self.network()
        with torch.no_grad():
            logits = network(torch.as_tensor(values))
            probabilities = torch.softmax(logits, dim=1).numpy().astype(np.float64)
        # float32 softmax rows sum to 1 only within rounding; scikit-learn's metrics check.
        return np.asarray(probabilities / probabilities.sum(axis=1, keepdims=True))


class NeuralRegressor(RegressorMixin, NeuralClassifier):  # type: ignore[misc]
    """The same network with one output, trained on the standardised target (squared error)
    and answering in the target's units: a scikit-learn regressor."""

    regression = True
    target_dtype = np.float32

    def predict(self, x: Any) -> np.ndarray:
        import torch

        values = np.array(x, dtype=np.float32)
        with torch.no_grad():
            output = self.network()(torch.as_tensor(values))
        return np.asarray(output.numpy().reshape(-1), dtype=np.float64)

    def predict_proba(self, x: Any) -> np.ndarray:
        raise AttributeError("a regressor has no class probabilities")
