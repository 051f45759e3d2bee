"""Fairness on the bundled Adult data: what the default candidates' disparity is, what Fairlearn's
ThresholdOptimizer achieves and costs, and what the audit costs in time.

For each of several splits (split and training seed varied together) it trains the default
candidates plus a ThresholdOptimizer over logreg as well as over hgb, audits every candidate on
the test split (by sex, by race, and their intersection) exactly as the pipeline does, and prints:

- per candidate: test accuracy, equalized-odds and demographic-parity difference by sex, and the
  equalized-odds difference by race (means over the splits, with the spread),
- per mitigation: the change in equalized-odds difference by sex and in accuracy against its base,
- the wall time of auditing all candidates (with their bar charts as PNG), one after the other,
  against the time to train them, measured in the same run. Target: the audit adds <= 5 s (the
  pipeline audits two candidates at a time, so its stage takes less than this sum).

    .venv/bin/python benchmarks/fairness.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from typing import Any

import tasks  # noqa: F401  (no-telemetry environment first)
from trustflow.config import CandidateConfig, TabularConfig
from trustflow.data.sources import load_source
from trustflow.data.split import split_frame
from trustflow.data.validate import validate_frame
from trustflow.evaluate import evaluate_model
from trustflow.fairness import audit_figure, audit_predictions
from trustflow.models.candidates import train_candidate
from trustflow.models.mitigation import mitigate_candidate
from trustflow.models.preprocess import features_and_target, fit_preprocessor

SEEDS = (42, 7, 11, 3, 5)
EXTRA = CandidateConfig(
    name="logreg-fair",
    kind="threshold_optimizer",
    params={"base": "logreg", "sensitive_feature": "sex", "constraints": "equalized_odds"},
)


def one_split(seed: int) -> tuple[dict[str, dict[str, float]], float, float]:
    config = TabularConfig.model_validate({"split": {"seed": seed}, "train": {"seed": seed}})
    schema = config.data.dataset
    frame, _ = validate_frame(load_source("bundled:adult").frame, schema, "drop", "bundled")
    splits = split_frame(frame, schema.target.column, config.split)
    preprocessor = fit_preprocessor(splits.train, schema)
    features, target = features_and_target(splits.train, schema)
    valid_x, valid_y = features_and_target(splits.valid, schema)
    test_x, test_y = features_and_target(splits.test, schema)

    started = time.perf_counter()
    models: dict[str, Any] = {}
    for candidate in (*config.train.candidates, EXTRA):
        if candidate.base is None:
            models[candidate.name] = train_candidate(
                preprocessor, features, target, candidate, seed
            )
        else:
            models[candidate.name] = mitigate_candidate(
                models[candidate.base], valid_x, valid_y, candidate, seed
            )
    train_s = time.perf_counter() - started

    predictions = {name: model.predict(test_x) for name, model in models.items()}
    started = time.perf_counter()
    audits = {}
    for name, predicted in predictions.items():
        audits[name] = audit_predictions(
            name, test_x, test_y, predicted, config.sensitive_features, config.fairness
        )
        for feature in audits[name].features.values():  # the charts, rendered as the task does
            audit_figure(feature, name).savefig(io.BytesIO(), format="png")
    audit_s = time.perf_counter() - started

    rows = {}
    for name, model in models.items():
        sex, race = audits[name].features["sex"], audits[name].features["race"]
        rows[name] = {
            "accuracy": evaluate_model(
                model, test_x, test_y, schema.target_labels
            ).metrics.accuracy,
            "eod_sex": float(sex.equalized_odds_difference or 0.0),
            "dpd_sex": float(sex.demographic_parity_difference or 0.0),
            "eod_race": float(race.equalized_odds_difference or 0.0),
            "passed": float(audits[name].passed),
        }
    return rows, train_s, audit_s


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.4f} ± {sd:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, choices=range(1, len(SEEDS) + 1))
    args = parser.parse_args()
    results, train_times, audit_times = [], [], []
    for seed in SEEDS[: args.seeds]:
        rows, train_s, audit_s = one_split(seed)
        results.append(rows)
        train_times.append(train_s)
        audit_times.append(audit_s)
        print(f"split seed {seed}: trained in {train_s:.1f} s, audited in {audit_s:.2f} s")

    names = list(results[0])
    print(f"\nmeans ± sd over {len(results)} splits (test split, fairness.min_group_rows = 100)")
    print(f"{'candidate':<12} {'accuracy':>17} {'EOD sex':>17} {'DPD sex':>17} "
          f"{'EOD race':>17} {'fairness ok':>11}")  # fmt: skip
    for name in names:
        cells = [spread([r[name][key] for r in results]) for key in
                 ("accuracy", "eod_sex", "dpd_sex", "eod_race")]  # fmt: skip
        passes = sum(int(r[name]["passed"]) for r in results)
        print(f"{name:<12} " + " ".join(f"{c:>17}" for c in cells) + f" {passes:>7}/{len(results)}")

    print(
        "\nmitigation (ThresholdOptimizer, equalized odds on sex, fitted on the validation split)"
    )
    for mitigated, base in (("hgb-fair", "hgb"), ("logreg-fair", "logreg")):
        eod = [r[mitigated]["eod_sex"] - r[base]["eod_sex"] for r in results]
        acc = [100 * (r[mitigated]["accuracy"] - r[base]["accuracy"]) for r in results]
        before = statistics.fmean([r[base]["eod_sex"] for r in results])
        after = statistics.fmean([r[mitigated]["eod_sex"] for r in results])
        print(
            f"{mitigated} vs {base}: EOD sex {before:.4f} -> {after:.4f} (change {spread(eod)}), "
            f"accuracy change {statistics.fmean(acc):+.2f} points"
        )

    audit, train = statistics.median(audit_times), statistics.median(train_times)
    print(f"\naudit of all {len(names)} candidates: {audit:.2f} s (median) vs training them "
          f"{train:.1f} s: ratio {audit / train:.3f}; target <= 5 s: "
          f"{'ok' if audit <= 5 else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
