"""The Lightning networks against their targets, each measured in this run:

1. Tabular MLP (the default `mlp` candidate) vs the best scikit-learn candidate (`hgb`, default
   settings) on the same split of the bundled Adult data: test ROC AUC, and the MLP's seconds per
   epoch over the training split on the CPU. Targets: AUC within 1 point; epoch <= 3 s.
2. Warm start vs cold start: a network trained on an older data version (the first 80 % of the
   training rows) initialises one trained on all of them; both use the same seed and settings.
   Reported: epochs and seconds until the validation loss reaches the cold model's best.
3. The digits CNN (train-digits defaults), in each framework (Lightning, and Keras with
   `model.framework: keras`): test accuracy and training time on the CPU.
   Targets: accuracy >= 0.97 (both); Lightning within 60 s.

    .venv/bin/python benchmarks/neural.py [--seeds 2] [--accelerator cpu|cuda|auto]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import accuracy_score, roc_auc_score

from trustflow.config import DigitsConfig, TabularConfig
from trustflow.data.digits import digits_frame, features
from trustflow.data.sources import load_source
from trustflow.data.split import split_frame
from trustflow.data.validate import validate_frame
from trustflow.models.keras_net import KerasClassifier
from trustflow.models.neural import NeuralClassifier
from trustflow.models.preprocess import features_and_target, fit_preprocessor


def tabular(seed: int, accelerator: str) -> dict[str, float]:
    cfg = TabularConfig()
    schema = cfg.data.dataset
    frame, _ = validate_frame(load_source(cfg.data.source).frame, schema, "drop", "bundled")
    parts = split_frame(frame, schema.target.column, cfg.split.model_copy(update={"seed": seed}))
    pre = fit_preprocessor(parts.train, schema)
    (xt, yt), (xv, yv), (xs, ys) = (
        features_and_target(p, schema) for p in (parts.train, parts.valid, parts.test)
    )
    xt, xv, xs = pre.transform(xt), pre.transform(xv), pre.transform(xs)
    mlp_params = next(c for c in cfg.train.candidates if c.kind == "mlp").params
    hgb_params = next(c for c in cfg.train.candidates if c.name == "hgb").params
    numeric = len(schema.numeric_features)
    params = {"numeric": numeric, **mlp_params}

    hgb = HistGradientBoostingClassifier(**hgb_params, random_state=seed).fit(xt, yt)
    cold = NeuralClassifier("mlp", params, seed, accelerator).fit(xt, yt, valid=(xv, yv))
    keras = KerasClassifier("mlp", {}, seed, accelerator).fit(xt, yt, valid=(xv, yv))

    # Warm start: the same network trained on an older data version (80 % of the rows).
    older = np.random.default_rng(seed).permutation(len(yt))[: int(0.8 * len(yt))]
    source = NeuralClassifier("mlp", params, seed + 100, accelerator).fit(
        xt[older], yt[older], valid=(xv, yv)
    )
    warm = NeuralClassifier("mlp", params, seed, accelerator).fit(
        xt, yt, valid=(xv, yv), warm=source.warm_start("older data version")
    )

    def reach(network: NeuralClassifier, target: float) -> tuple[float, float]:
        """(epochs, seconds) until the validation loss is at or below ``target``; NaN: never."""
        for epoch, timing in zip(network.history_, network.timings_, strict=True):
            if epoch["val_loss"] <= target + 1e-9:
                return epoch["epoch"], timing["elapsed_seconds"]
        return float("nan"), float("nan")

    target = cold.best_val_loss_
    cold_epochs, cold_seconds = reach(cold, target)
    warm_epochs, warm_seconds = reach(warm, target)
    # Within 0.5 % of the cold best, for when the warm run stops just short of it.
    near = target * 1.005
    cold_near, cold_near_s = reach(cold, near)
    warm_near, warm_near_s = reach(warm, near)
    return {
        "hgb_auc": roc_auc_score(ys, hgb.predict_proba(xs)[:, 1]),
        "mlp_auc": roc_auc_score(ys, cold.predict_proba(xs)[:, 1]),
        "keras_auc": roc_auc_score(ys, keras.predict_proba(xs)[:, 1]),
        "keras_epoch_seconds": statistics.median(keras.epoch_seconds()),
        "keras_epochs_run": len(keras.history_),
        "warm_auc": roc_auc_score(ys, warm.predict_proba(xs)[:, 1]),
        "epoch_seconds": statistics.median(t["epoch_seconds"] for t in cold.timings_),
        "cold_epochs_run": len(cold.history_),
        "cold_epochs": cold_epochs,
        "cold_seconds": cold_seconds,
        "warm_epochs": warm_epochs,
        "warm_seconds": warm_seconds,
        "cold_near_epochs": cold_near,
        "cold_near_seconds": cold_near_s,
        "warm_near_epochs": warm_near,
        "warm_near_seconds": warm_near_s,
        "warm_best_val_loss": warm.best_val_loss_,
        "warm_epochs_run": len(warm.history_),
        "warm_first_val_loss": warm.history_[0]["val_loss"],
        "cold_first_val_loss": cold.history_[0]["val_loss"],
        "cold_best_val_loss": target,
        "train_rows": len(yt),
    }


def digits(seed: int, accelerator: str, framework: str) -> dict[str, float]:
    cfg = DigitsConfig()
    parts = split_frame(digits_frame(), "digit", cfg.split.model_copy(update={"seed": seed}))
    started = time.perf_counter()
    estimator = KerasClassifier if framework == "keras" else NeuralClassifier
    network = estimator("cnn", cfg.train.params, seed, accelerator).fit(
        *features(parts.train), valid=features(parts.valid)
    )
    seconds = time.perf_counter() - started
    x, y = features(parts.test)
    return {
        "accuracy": accuracy_score(y, network.predict(x)),
        "seconds": seconds,
        "epochs": len(network.history_),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2, help="split seeds 42, 7, 11, ...")
    parser.add_argument("--accelerator", default="cpu", choices=("cpu", "cuda", "auto"))
    args = parser.parse_args()
    seeds = [42, 7, 11, 3, 5][: args.seeds]
    rows = [tabular(seed, args.accelerator) for seed in seeds]
    for seed, row in zip(seeds, rows, strict=True):
        print(
            f"seed {seed}: hgb AUC {row['hgb_auc']:.4f}, mlp AUC {row['mlp_auc']:.4f} "
            f"(warm-started {row['warm_auc']:.4f}); {row['train_rows']} training rows, "
            f"{row['epoch_seconds']:.2f} s/epoch, cold ran {row['cold_epochs_run']} epochs"
        )
        print(
            f"  keras_mlp AUC {row['keras_auc']:.4f}, {row['keras_epoch_seconds']:.2f} s/epoch, "
            f"ran {row['keras_epochs_run']} epochs"
        )
        print(
            f"  to the cold best val loss {row['cold_best_val_loss']:.4f}: cold "
            f"{row['cold_epochs']:.0f} epochs / {row['cold_seconds']:.1f} s, warm "
            f"{row['warm_epochs']:.0f} epochs / {row['warm_seconds']:.1f} s (first epoch val "
            f"loss warm {row['warm_first_val_loss']:.4f} vs cold {row['cold_first_val_loss']:.4f})"
        )
        print(
            f"  to within 0.5 % of it: cold {row['cold_near_epochs']:.0f} epochs / "
            f"{row['cold_near_seconds']:.1f} s, warm {row['warm_near_epochs']:.0f} epochs / "
            f"{row['warm_near_seconds']:.1f} s; warm best {row['warm_best_val_loss']:.4f} after "
            f"{row['warm_epochs_run']} epochs run"
        )

    def mean(key: str) -> float:
        return statistics.mean(r[key] for r in rows)

    gap = (mean("hgb_auc") - mean("mlp_auc")) * 100
    print(
        f"\ntabular ({len(seeds)} seeds, {args.accelerator}): AUC gap hgb - mlp = {gap:.2f} points "
        f"(target <= 1); epoch {mean('epoch_seconds'):.2f} s (target <= 3 s)"
    )
    keras_gap = (mean("mlp_auc") - mean("keras_auc")) * 100
    print(
        f"keras: AUC gap mlp - keras_mlp = {keras_gap:.2f} points (target <= 1.5); epoch "
        f"{mean('keras_epoch_seconds'):.2f} s"
    )
    print(
        f"warm start: {mean('warm_epochs'):.1f} epochs / {mean('warm_seconds'):.1f} s vs cold "
        f"{mean('cold_epochs'):.1f} epochs / {mean('cold_seconds'):.1f} s to the cold best "
        f"(NaN: not reached before early stopping); to within 0.5 %: warm "
        f"{mean('warm_near_epochs'):.1f} epochs / {mean('warm_near_seconds'):.1f} s vs cold "
        f"{mean('cold_near_epochs'):.1f} epochs / {mean('cold_near_seconds'):.1f} s"
    )
    for framework in ("lightning", "keras"):
        digit_rows = [digits(seed, args.accelerator, framework) for seed in seeds]
        for seed, row in zip(seeds, digit_rows, strict=True):
            print(
                f"digits ({framework}) seed {seed}: accuracy {row['accuracy']:.4f} in "
                f"{row['seconds']:.1f} s ({row['epochs']} epochs)"
            )
        print(
            f"digits ({framework}): accuracy "
            f"{statistics.mean(r['accuracy'] for r in digit_rows):.4f} (target >= 0.97) in "
            f"{statistics.mean(r['seconds'] for r in digit_rows):.1f} s"
        )


if __name__ == "__main__":
    main()
