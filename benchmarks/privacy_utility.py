"""Privacy against utility, in each privacy mode, at several ε, with the non-private baseline
measured in the same run, on the bundled Adult data.

- preprocessing: the shared preprocessor's statistics from a pure ε-DP OpenDP release; the
  candidates that use them (logistic regression, gradient boosting) train on the real rows.
  Target at ε = 1: the champion's accuracy within 0.5 points of `off`; the DP fit adds <= 2 s.
- training: the default candidates of `privacy.mode: training` (the DP logistic regression and
  the MLP) trained by DP-SGD at ε (δ = 1e-5), on the exact preprocessing so that the comparison
  isolates DP-SGD; `off` is the same networks without DP. Target at ε = 1: within 2 accuracy
  points of `off`.
- synthetic: logistic regression and gradient boosting trained on an MST synthetic copy of the
  training split at ε (δ = 1e-9; .venv-synth, `make synth`); `off` trains them on the real rows.
  Target at ε = 1: ROC AUC within 4 points of `off`.

Prints ROC AUC, accuracy and fit seconds per mode and ε (mean ± sd over split seeds), each
target's verdict, and writes a plot and the numbers to --out; a pipeline run logs them to MLflow
with `--set privacy.utility_report=<out>/privacy_utility.png`.

    .venv/bin/python benchmarks/privacy_utility.py [--modes preprocessing,training,synthetic]
        [--epsilons 0.5,1,2,4,8] [--seeds 1] [--out benchmarks/out]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import tasks  # noqa: F401  (no-telemetry environment first)
from trustflow.config import PrivacyConfig, SyntheticConfig, TabularConfig
from trustflow.data.sources import load_source
from trustflow.data.split import Splits, split_frame
from trustflow.data.validate import validate_frame
from trustflow.evaluate import evaluate_model
from trustflow.models.candidates import train_candidate, train_network
from trustflow.models.preprocess import features_and_target, fit_preprocessor
from trustflow.privacy.dpsgd import plan_dp_sgd
from trustflow.privacy.mechanisms import private_preprocessor, release_statistics
from trustflow.privacy.synthetic import synthesize

SEEDS = (42, 7, 11, 3, 5)
# The default candidates that use the shared preprocessing (the EBM bins raw features, and the
# ThresholdOptimizer follows hgb).
SHARED = ("logistic_regression", "hist_gradient_boosting")
MODES = ("preprocessing", "training", "synthetic")
# mode -> (metric, largest loss in points at ε = 1, against `off`)
TARGETS = {"preprocessing": ("accuracy", 0.5), "training": ("accuracy", 2.0),
           "synthetic": ("roc_auc", 4.0)}  # fmt: skip

Scores = dict[str, dict[str, dict[str, list[float]]]]  # eps -> candidate -> metric -> per seed


def scored(model: Any, splits: Splits, schema: Any, seconds: float) -> dict[str, float]:
    test_x, test_y = features_and_target(splits.test, schema)
    metrics = evaluate_model(model, test_x, test_y, schema.target_labels).metrics
    return {"roc_auc": metrics.roc_auc, "accuracy": metrics.accuracy, "fit_seconds": seconds}


def timed(fit: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    model = fit()
    return model, time.perf_counter() - started


def preprocessing(splits: Splits, epsilon: float | None, seed: int) -> dict[str, dict]:
    base = TabularConfig()
    schema = base.data.dataset
    candidates = [c for c in base.train.candidates if c.kind in SHARED]
    if epsilon is None:
        preprocessor, preprocess_seconds = timed(lambda: fit_preprocessor(splits.train, schema))
    else:
        cfg = PrivacyConfig(mode="preprocessing", epsilon=epsilon, budget=epsilon)
        preprocessor, preprocess_seconds = timed(
            lambda: private_preprocessor(schema, release_statistics(splits.train, schema, cfg))
        )
    features, target = features_and_target(splits.train, schema)
    out = {}
    for c in candidates:
        model, seconds = timed(lambda c=c: train_candidate(preprocessor, features, target, c, seed))
        out[c.name] = scored(model, splits, schema, seconds)
        out[c.name]["preprocess_seconds"] = preprocess_seconds
    return out


def training(splits: Splits, epsilon: float | None, seed: int) -> dict[str, dict]:
    config = TabularConfig.model_validate({"privacy": {"mode": "training"}})
    schema, dp = config.data.dataset, config.privacy.training
    preprocessor = fit_preprocessor(splits.train, schema)
    train, valid = (features_and_target(s, schema) for s in (splits.train, splits.valid))
    out = {}
    for c in config.candidates:
        params = c.model_kind.validate(c.params).model_dump()
        if c.model_kind.architecture == "mlp":  # DP-SGD's MLP has no periodic embeddings;
            c = c.model_copy(update={"params": {**c.params, "numeric": 0}})  # nor has `off`'s
        plan = None
        if epsilon is not None:
            plan = plan_dp_sgd(
                rows=len(train[1]), batch_size=params["batch_size"], epochs=params["max_epochs"],
                epsilon=epsilon, delta=dp.delta, max_grad_norm=dp.max_grad_norm,
                accountant=dp.accountant,
            )  # fmt: skip
        started = time.perf_counter()
        model = train_network(preprocessor, train, valid, c, seed, "cpu", dp=plan)
        seconds = time.perf_counter() - started
        out[c.name] = scored(model, splits, schema, seconds)
    return out


def synthetic(splits: Splits, epsilon: float | None, seed: int) -> dict[str, dict]:
    base = TabularConfig()
    schema = base.data.dataset
    candidates = [c for c in base.train.candidates if c.kind in SHARED]
    train = splits.train
    started = time.perf_counter()
    if epsilon is not None:
        with tempfile.TemporaryDirectory() as tmp:
            real, made = Path(tmp) / "train.parquet", Path(tmp) / "copy.parquet"
            splits.train.to_parquet(real, index=False)
            synthesize(real, schema, SyntheticConfig(epsilon=epsilon), len(splits.train), made)
            train = pd.read_parquet(made).astype(splits.train.dtypes.to_dict())
    made_seconds = time.perf_counter() - started
    preprocessor = fit_preprocessor(train, schema)
    features, target = features_and_target(train, schema)
    out = {}
    for c in candidates:
        model, seconds = timed(lambda c=c: train_candidate(preprocessor, features, target, c, seed))
        out[c.name] = scored(model, splits, schema, seconds + made_seconds)
    return out


SERIES: dict[str, Callable[[Splits, float | None, int], dict[str, dict]]] = {
    "preprocessing": preprocessing,
    "training": training,
    "synthetic": synthetic,
}


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {sd:.4f}"


def report(mode: str, scores: Scores) -> None:
    names = list(scores["off"])
    print(f"\n{mode}: test metrics, mean ± sd over split seeds; fit seconds")
    for eps, cells in scores.items():
        row = "  ".join(
            f"{n} AUC {mean_sd(cells[n]['roc_auc'])} acc {mean_sd(cells[n]['accuracy'])} "
            f"{statistics.fmean(cells[n]['fit_seconds']):.1f}s"
            for n in names
        )
        print(f"  ε = {eps:>4}: {row}")
    metric, allowed = TARGETS[mode]
    if "1" not in scores:
        return
    # The candidate that is best without privacy is the one the target is about.
    best = max(names, key=lambda n: statistics.fmean(scores["off"][n]["roc_auc"]))
    loss = 100 * (
        statistics.fmean(scores["off"][best][metric]) - statistics.fmean(scores["1"][best][metric])
    )
    verdict = "met" if loss <= allowed else "NOT met"
    print(f"  target at ε = 1 ({best}): {metric} {loss:+.2f} points below off "
          f"(allowed {allowed:g}): {verdict}")  # fmt: skip
    if mode == "preprocessing":
        exact = statistics.median(scores["off"][best]["preprocess_seconds"])
        private = statistics.median(
            v for e in scores if e != "off" for v in scores[e][best]["preprocess_seconds"]
        )
        print(f"  preprocessing fit: exact {exact:.3f} s, DP {private:.3f} s (median): adds "
              f"{private - exact:+.3f} s (target <= 2 s: "
              f"{'met' if private - exact <= 2 else 'NOT met'})")  # fmt: skip


def plot(results: dict[str, Scores], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(results), 6.4), dpi=100)
    axes = np.atleast_2d(fig.subplots(2, len(results), squeeze=False))
    for column, (mode, scores) in enumerate(results.items()):
        epsilons = [e for e in scores if e != "off"]
        xs = [float(e) for e in epsilons]
        for row, metric in enumerate(("roc_auc", "accuracy")):
            ax = axes[row][column]
            for index, name in enumerate(scores["off"]):
                means = [statistics.fmean(scores[e][name][metric]) for e in epsilons]
                sds = [statistics.pstdev(scores[e][name][metric]) for e in epsilons]
                ax.errorbar(xs, means, yerr=sds, marker="o", capsize=3, label=name,
                            color=f"C{index}")  # fmt: skip
                ax.axhline(statistics.fmean(scores["off"][name][metric]), color=f"C{index}",
                           linestyle="--", linewidth=0.8)  # fmt: skip
            ax.set(xscale="log", xlabel=f"ε ({mode})", ylabel=metric,
                   title=f"{mode}: test {metric} (dashed: off)")  # fmt: skip
            ax.set_xticks(xs, [f"{x:g}" for x in xs])  # the ε measured, not log decades
            ax.minorticks_off()
            ax.grid(linewidth=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--epsilons", default="0.5,1,2,4,8")
    parser.add_argument("--seeds", type=int, default=1, choices=range(1, len(SEEDS) + 1))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown modes {unknown}; known: {', '.join(MODES)}")
    epsilons: list[float | None] = [None, *(float(e) for e in args.epsilons.split(","))]
    schema = TabularConfig().data.dataset
    frame, _ = validate_frame(load_source("bundled:adult").frame, schema, "drop", "bundled")
    results: dict[str, Scores] = {mode: {} for mode in modes}
    for seed in SEEDS[: args.seeds]:
        config = TabularConfig.model_validate({"split": {"seed": seed}})
        splits = split_frame(frame, schema.target.column, config.split)
        for mode in modes:
            for epsilon in epsilons:
                eps = "off" if epsilon is None else f"{epsilon:g}"
                for name, cell in SERIES[mode](splits, epsilon, seed).items():
                    into = results[mode].setdefault(eps, {}).setdefault(name, {})
                    for metric, value in cell.items():
                        into.setdefault(metric, []).append(value)
                print(f"seed {seed}, {mode}, ε = {eps}: done", flush=True)
    for mode in modes:
        report(mode, results[mode])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "privacy_utility.json").write_text(json.dumps(results, indent=2))
    plot(results, args.out / "privacy_utility.png")
    print(f"wrote {args.out / 'privacy_utility.png'} and {args.out / 'privacy_utility.json'}")


if __name__ == "__main__":
    main()
