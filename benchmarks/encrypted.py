"""Encrypted inference (issue 18): what scoring on CKKS ciphertexts costs, against plaintext
serving of the same logistic regression measured in the same run.

A logistic regression is trained on the bundled Adult data (train split) and exported to ONNX,
as the pipeline does; `python -m trustflow.serving --encrypted` serves it on 127.0.0.1. Then:

1. Server compute, in this process on one core (no HTTP), in both layouts (packed and
   feature-major, see trustflow.crypto.ckks): ``ckks.evaluate`` (deserialize the ciphertexts,
   multiply, add, serialize the answer) for a 1-row and a full (4,096-row) request; median of
   ``--repeats``. Plaintext baseline: the ONNX graph's onnxruntime session on the same rows.
2. Through the real server, in both layouts: ``EncryptedClient.predict`` on 1 row and on 4,096
   rows, its phases timed apart (preprocess, encrypt, server incl. network, decrypt), against
   the same rows on /v1/predict.
3. Bytes on the wire per row, both ways, against /v1/predict's JSON.

Targets: server compute per single-row request <= 10 ms on an idle core; >= 1,000 rows/s with
batched requests.

    .venv/bin/python benchmarks/encrypted.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from trustflow.client import EncryptedClient
from trustflow.config import CandidateConfig, OnnxConfig, SplitConfig, TabularConfig
from trustflow.crypto import ckks
from trustflow.crypto.linear import split_linear
from trustflow.data.sources import load_source
from trustflow.data.split import split_frame
from trustflow.data.validate import validate_frame
from trustflow.export.onnx import convert_pipeline, inference_session, to_feed
from trustflow.models.candidates import train_candidate
from trustflow.models.preprocess import features_and_target, fit_preprocessor

SCHEMA = TabularConfig().data.dataset
JSON = "application/json"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def median_seconds(action, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def records(frame) -> list[dict]:
    rows = frame.drop(columns=[SCHEMA.target.column]).to_dict(orient="records")
    return [{k: (None if v != v else v) for k, v in row.items()} for row in rows]  # NaN -> None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    frame, _ = validate_frame(load_source("bundled:adult").frame, SCHEMA, "impute", "bundled")
    splits = split_frame(frame, SCHEMA.target.column, SplitConfig())
    features, target = features_and_target(splits.train, SCHEMA)
    cfg = CandidateConfig(name="logreg", kind="logistic_regression")
    model = train_candidate(fit_preprocessor(splits.train, SCHEMA), features, target, cfg, 0)
    graph = convert_pipeline(model, SCHEMA, OnnxConfig(), "skl2onnx").SerializeToString()
    split = split_linear(graph, "logreg.onnx")
    params = ckks.DEFAULT_PARAMS
    test = splits.test.head(params.slots)
    print(
        f"logistic regression: {split.features} features after preprocessing; CKKS N="
        f"{params.poly_modulus_degree}, moduli {list(params.coeff_mod_bit_sizes)}, scale "
        f"2^{params.scale_bits}, {params.slots} rows per request\n"
    )

    # 1. server compute, one core, no HTTP
    session, front = inference_session(graph), inference_session(split.front)
    context = ckks.new_context(params)
    server_context = ckks.load_public_context(ckks.public_context(context), params)
    sizes = (("1 row", test.head(1)), (f"{len(test):,} rows", test))
    print(f"server compute (one core, in-process; median of {args.repeats} runs)")
    compute: dict[tuple[str, str], tuple[float, int]] = {}
    for label, rows in sizes:
        feed = to_feed(rows, SCHEMA)
        plain = median_seconds(lambda feed=feed: session.run(None, feed), args.repeats * 20)
        print(f"  {label}: plaintext onnxruntime {plain * 1e3:.3f} ms")
        for layout in ckks.LAYOUTS:
            body = ckks.encrypt_features(context, front.run(None, feed)[0], params, layout)

            def evaluate(body: bytes = body, layout: str = layout) -> None:
                blobs = ckks.unframe(body)
                ckks.evaluate(server_context, blobs, split.weights, split.bias, layout)

            seconds = median_seconds(evaluate, args.repeats)
            compute[(layout, label)] = (seconds, len(rows))
            print(
                f"    {layout:>13}: {seconds * 1e3:8.1f} ms  {len(rows) / seconds:9,.0f} rows/s  "
                f"{seconds / plain:7,.0f}x plaintext"
            )

    # 2-3. through the real server
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "logreg.onnx"
        path.write_bytes(graph)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "trustflow.serving", "--model", str(path), "--port",
             str(port), "--encrypted"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_ready(f"{url}/readyz", server)
            print("\nend to end through the server, one request each (client phases apart)")
            for layout in ckks.LAYOUTS:
                started = time.perf_counter()
                client = EncryptedClient(url, layout=layout)
                setup = time.perf_counter() - started
                print(
                    f"  {layout}: client set-up {setup * 1e3:.0f} ms (fetch the model, make "
                    f"keys, send the {client.context_bytes / 1e3:,.0f} KB public context)"
                )
                for label, rows in sizes:
                    end_to_end(client, url, label, records(rows))
                client.close()
        finally:
            server.terminate()
            server.wait(timeout=30)

    single, _ = compute[(ckks.PACKED, "1 row")]
    full, rows = compute[(ckks.PACKED, f"{len(test):,} rows")]
    print(
        f"\ntargets (packed layout): single-row server compute {single * 1e3:.1f} ms (<= 10 ms: "
        f"{'met' if single <= 0.010 else 'NOT met'}); batched {rows / full:,.0f} rows/s "
        f"(>= 1,000: {'met' if rows / full >= 1000 else 'NOT met'})"
    )


def wait_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not come up") from None
            time.sleep(0.2)


def end_to_end(client: EncryptedClient, url: str, label: str, batch: list[dict]) -> None:
    started = time.perf_counter()
    prediction = client.predict(batch)
    total = time.perf_counter() - started
    body = json.dumps({"records": batch}).encode()
    request = urllib.request.Request(f"{url}/v1/predict", body, {"Content-Type": JSON})
    started = time.perf_counter()
    with urllib.request.urlopen(request) as response:
        answer = response.read()
    plain = time.perf_counter() - started
    t = {phase: seconds * 1e3 for phase, seconds in prediction.timings.items()}
    n = len(batch)
    sent, received = prediction.bytes_sent / n, prediction.bytes_received / n
    ratio = (prediction.bytes_sent + prediction.bytes_received) / (len(body) + len(answer))
    print(
        f"    {label:>11}: {total * 1e3:6.0f} ms = preprocess {t['preprocess']:.0f} + encrypt "
        f"{t['encrypt']:.0f} + server and network {t['server']:.0f} + decrypt "
        f"{t['decrypt']:.0f}; plaintext /v1/predict {plain * 1e3:.1f} ms\n"
        f"    {'':>11}  bytes per row: sent {sent:,.0f}, received {received:,.0f}; plaintext "
        f"JSON {len(body) / n:,.0f} and {len(answer) / n:,.0f} ({ratio:,.0f}x)"
    )


if __name__ == "__main__":
    main()
