"""Transfer learning on the bundled digits, measured in this run: a Keras CNN pretrained on a
source task (digits 0-4, all their training labels) and fine-tuned on a target task (digits 5-9
with a fraction of their training labels: backbone frozen first, then unfrozen at the lower
learning rate), against the same CNN trained from scratch on the same labels. Both see the
same validation rows (the target's whole validation split, for early stopping) and are scored
on the target's whole test split. Target: fine-tuned beats scratch by >= 3 accuracy points at
10 % of the target labels.

    .venv/bin/python benchmarks/transfer.py [--seeds 3] [--fraction 0.1] [--freeze-epochs 5]
        [--fine-tune-learning-rate R]
"""

from __future__ import annotations

import argparse
import statistics

from sklearn.metrics import accuracy_score

from trustflow.config import DigitsConfig
from trustflow.data.digits import digits_frame, features
from trustflow.data.split import split_frame
from trustflow.models.keras_net import KerasClassifier, Transfer


def measure(
    seed: int, fraction: float, freeze_epochs: int, fine_tune_rate: float | None
) -> dict[str, float]:
    cfg = DigitsConfig()
    tuning = {} if fine_tune_rate is None else {"fine_tune_learning_rate": fine_tune_rate}
    parts = split_frame(digits_frame(), "digit", cfg.split.model_copy(update={"seed": seed}))
    source, target = (lambda f: f[f["digit"] < 5]), (lambda f: f[f["digit"] >= 5])
    pretrained = KerasClassifier("cnn", cfg.train.params, seed, "cpu").fit(
        *features(source(parts.train)), valid=features(source(parts.valid))
    )
    train = target(parts.train)
    labelled = train.sample(frac=fraction, random_state=seed)
    valid, test = features(target(parts.valid)), features(target(parts.test))
    scratch = KerasClassifier("cnn", cfg.train.params, seed, "cpu").fit(
        *features(labelled), valid=valid
    )
    tuned = KerasClassifier("cnn", {**cfg.train.params, **tuning}, seed, "cpu").fit(
        *features(labelled),
        valid=valid,
        transfer=Transfer(pretrained.warm_start("digits 0-4"), freeze_epochs),
    )
    x, y = test
    source_x, source_y = features(source(parts.test))
    return {
        "labels": len(labelled),
        "source_accuracy": accuracy_score(source_y, pretrained.predict(source_x)),
        "scratch": accuracy_score(y, scratch.predict(x)),
        "tuned": accuracy_score(y, tuned.predict(x)),
        "test_rows": len(y),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--freeze-epochs", type=int, default=5)
    parser.add_argument(
        "--fine-tune-learning-rate", type=float, default=None,
        help="after unfreezing (default: the CNN's fine_tune_learning_rate)",
    )  # fmt: skip
    args = parser.parse_args()
    seeds = [42, 7, 11, 3, 5][: args.seeds]
    rows = [
        measure(seed, args.fraction, args.freeze_epochs, args.fine_tune_learning_rate)
        for seed in seeds
    ]
    for seed, row in zip(seeds, rows, strict=True):
        print(
            f"seed {seed}: source (0-4) test accuracy {row['source_accuracy']:.4f}; target (5-9) "
            f"with {row['labels']} labels: fine-tuned {row['tuned']:.4f}, scratch "
            f"{row['scratch']:.4f} on {row['test_rows']} test images"
        )

    def spread(key: str) -> str:
        values = [r[key] for r in rows]
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        return f"{statistics.mean(values):.4f} ± {sd:.4f}"

    gain = statistics.mean(r["tuned"] - r["scratch"] for r in rows) * 100
    print(
        f"\n{len(seeds)} seeds, {args.fraction:.0%} of the target labels: fine-tuned "
        f"{spread('tuned')} vs scratch {spread('scratch')} (mean ± sd); fine-tuned - scratch = "
        f"{gain:.1f} points (target >= 3)"
    )


if __name__ == "__main__":
    main()
