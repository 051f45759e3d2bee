"""Privacy against utility: the default candidates trained on DP preprocessing at several ε.

For each split seed and each ε in {0.1, 0.5, 1, 2, 8} (pure ε-DP, a fresh OpenDP release each
time) and with privacy off, it fits the shared preprocessor, trains the candidates that use it
(logistic regression and gradient boosting; the EBM bins raw features and the ThresholdOptimizer
follows hgb, so neither depends on these statistics), and scores the test split. Prints ROC AUC
and accuracy per ε (mean ± sd over seeds), the champion's accuracy gap to `off` (target at ε = 1:
within 0.5 points), and the time DP preprocessing takes against the exact fit measured in the
same run (target: adds <= 2 s). Writes a plot and the numbers to --out; a pipeline run logs them
to MLflow with `--set privacy.utility_report=<out>/privacy_utility.png`.

    .venv/bin/python benchmarks/privacy_utility.py [--seeds 3] [--out benchmarks/out]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import tasks  # noqa: F401  (no-telemetry environment first)
from trustflow.config import PrivacyConfig, TabularConfig
from trustflow.data.sources import load_source
from trustflow.data.split import split_frame
from trustflow.data.validate import validate_frame
from trustflow.evaluate import evaluate_model
from trustflow.models.candidates import train_candidate
from trustflow.models.preprocess import features_and_target, fit_preprocessor
from trustflow.privacy.mechanisms import private_preprocessor, release_statistics

EPSILONS: tuple[float | None, ...] = (0.1, 0.5, 1.0, 2.0, 8.0, None)  # None: privacy off
SEEDS = (42, 7, 11, 3, 5)


def label(epsilon: float | None) -> str:
    return "off" if epsilon is None else f"{epsilon:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, choices=range(1, len(SEEDS) + 1))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    args = parser.parse_args()
    base = TabularConfig()
    schema = base.data.dataset
    shared = ("logistic_regression", "hist_gradient_boosting")  # the kinds that use it
    candidates = [c for c in base.train.candidates if c.kind in shared]
    frame, _ = validate_frame(load_source("bundled:adult").frame, schema, "drop", "bundled")
    # scores[eps][candidate][metric] -> one value per seed
    scores: dict[str, dict[str, dict[str, list[float]]]] = {}
    exact_s, private_s = [], []
    for seed in SEEDS[: args.seeds]:
        config = TabularConfig.model_validate({"split": {"seed": seed}, "train": {"seed": seed}})
        splits = split_frame(frame, schema.target.column, config.split)
        features, target = features_and_target(splits.train, schema)
        test_x, test_y = features_and_target(splits.test, schema)
        for epsilon in EPSILONS:
            started = time.perf_counter()
            if epsilon is None:
                preprocessor = fit_preprocessor(splits.train, schema)
                exact_s.append(time.perf_counter() - started)
            else:
                cfg = PrivacyConfig(mode="preprocessing", epsilon=epsilon, budget=epsilon)
                preprocessor = private_preprocessor(
                    schema, release_statistics(splits.train, schema, cfg)
                )
                private_s.append(time.perf_counter() - started)
            for candidate in candidates:
                model = train_candidate(preprocessor, features, target, candidate, seed)
                metrics = evaluate_model(model, test_x, test_y, schema.target_labels).metrics
                cell = scores.setdefault(label(epsilon), {}).setdefault(candidate.name, {})
                cell.setdefault("roc_auc", []).append(metrics.roc_auc)
                cell.setdefault("accuracy", []).append(metrics.accuracy)
        print(f"split seed {seed}: done", flush=True)

    def mean_sd(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.fmean(values):.4f} ± {sd:.4f}"

    names = [c.name for c in candidates]
    print(f"\ntest metrics, mean ± sd over {args.seeds} split seeds (pure ε-DP preprocessing)")
    print(f"{'epsilon':>8} " + " ".join(f"{n + ' ' + m:>22}" for n in names
                                         for m in ("roc_auc", "accuracy")))  # fmt: skip
    for eps in scores:
        cells = [mean_sd(scores[eps][n][m]) for n in names for m in ("roc_auc", "accuracy")]
        print(f"{eps:>8} " + " ".join(f"{c:>22}" for c in cells))

    # The champion is the candidate with the best ROC AUC with privacy off.
    champion = max(names, key=lambda n: statistics.fmean(scores["off"][n]["roc_auc"]))
    off = statistics.fmean(scores["off"][champion]["accuracy"])
    print(f"\nchampion ({champion}) accuracy gap to off, in points:")
    for eps in scores:
        gap = 100 * (statistics.fmean(scores[eps][champion]["accuracy"]) - off)
        target = "  (target at ε = 1: within 0.5)" if eps == "1" else ""
        verdict = (" ok" if abs(gap) <= 0.5 else " MISSED") if eps == "1" else ""
        print(f"  ε = {eps:>4}: {gap:+.2f}{target}{verdict}")
    exact, private = statistics.median(exact_s), statistics.median(private_s)
    print(f"\npreprocessing fit on {len(features):,} training rows: exact {exact:.3f} s, "
          f"DP {private:.3f} s (median): adds {private - exact:+.3f} s, ratio "
          f"{private / exact:.2f}; target adds <= 2 s: "
          f"{'ok' if private - exact <= 2 else 'MISSED'}")  # fmt: skip

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "privacy_utility.json").write_text(json.dumps(scores, indent=2))
    plot(scores, names, args.out / "privacy_utility.png")
    print(f"wrote {args.out / 'privacy_utility.png'} and {args.out / 'privacy_utility.json'}")


def plot(scores: dict, names: list[str], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), dpi=100)
    axes = fig.subplots(1, 2)
    epsilons = [e for e in scores if e != "off"]
    xs = [float(e) for e in epsilons]
    for ax, metric in zip(axes, ("roc_auc", "accuracy"), strict=True):
        for index, name in enumerate(names):
            means = [statistics.fmean(scores[e][name][metric]) for e in epsilons]
            sds = [statistics.pstdev(scores[e][name][metric]) for e in epsilons]
            ax.errorbar(xs, means, yerr=sds, marker="o", capsize=3, label=name, color=f"C{index}")
            ax.axhline(statistics.fmean(scores["off"][name][metric]), color=f"C{index}",
                       linestyle="--", linewidth=0.8)  # fmt: skip
        ax.set(xscale="log", xlabel="ε (preprocessing only)", ylabel=metric,
               title=f"test {metric} (dashed: privacy off)")  # fmt: skip
        ax.grid(linewidth=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})


if __name__ == "__main__":
    main()
