"""Single-row inference in-process: the native scikit-learn pipeline's ``predict_proba`` on a
one-row DataFrame vs the same pipeline's ONNX graph in onnxruntime (issue target: >= 20x).

ONNX is timed twice: the session call alone, and with the feed built from the DataFrame row
(what a server does per request). Both candidates, trained here on the bundled data.

    .venv/bin/python benchmarks/onnx_latency.py [--repeats 2000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from trustflow.config import TabularConfig
from trustflow.data.sources import load_source
from trustflow.data.split import split_frame
from trustflow.data.validate import validate_frame
from trustflow.export.onnx import convert_pipeline, inference_session, to_feed
from trustflow.models.candidates import train_candidate
from trustflow.models.preprocess import features_and_target, fit_preprocessor


def median_us(call: Callable[[], object], repeats: int) -> float:
    for _ in range(20):  # warm-up
        call()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2000)
    args = parser.parse_args()
    config = TabularConfig()
    schema = config.data.dataset
    frame, _ = validate_frame(load_source("bundled:adult").frame, schema, "drop", "bundled")
    splits = split_frame(frame, schema.target.column, config.split)
    features, target = features_and_target(splits.train, schema)
    row = splits.test[schema.feature_columns].head(1)
    print(f"{'candidate':<10} {'native us':>10} {'onnx us':>9} {'onnx+feed us':>13} "
          f"{'ratio':>7} {'ratio+feed':>11}")  # fmt: skip
    for candidate in config.train.candidates:
        preprocessor = fit_preprocessor(splits.train, schema)
        model = train_candidate(preprocessor, features, target, candidate, config.train.seed)
        session = inference_session(
            convert_pipeline(
                model, schema, config.onnx, candidate.model_kind.onnx
            ).SerializeToString()
        )
        feed = to_feed(row, schema)
        native = median_us(lambda m=model: m.predict_proba(row), args.repeats)
        onnx_only = median_us(lambda s=session, f=feed: s.run(None, f), args.repeats)
        with_feed = median_us(lambda s=session: s.run(None, to_feed(row, schema)), args.repeats)
        print(f"{candidate.name:<10} {native:>10.0f} {onnx_only:>9.0f} {with_feed:>13.0f} "
              f"{native / onnx_only:>6.1f}x {native / with_feed:>10.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
