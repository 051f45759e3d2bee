"""`trustflow serve` is a drop-in for `mlflow models serve`: both real servers, on the same
registered version, get the same corpus of requests (tests/e2e/scoring_corpus.py), and must
answer with the same status class and the same predictions, except for the differences listed
in ``INTENTIONAL`` (also in docs/serving.md). MLflow's own client and payloads work unchanged.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from mlflow.artifacts import download_artifacts
from mlflow.models import convert_input_example_to_serving_input
from mlflow.pyfunc.scoring_server.client import ScoringServerClient

from tests.e2e.processes import BIN, clean_env, free_port, pointed_at, wait_until_up
from tests.e2e.scoring_corpus import build_corpus
from tests.e2e.serving import MODEL, Server, Trained, serving

pytestmark = [pytest.mark.e2e]

SAME, STRICTER, LENIENT, BETTER_ERROR = "same", "stricter", "more lenient", "4xx for MLflow's 5xx"
# Each intentional difference, by corpus case: (what kind, why).
INTENTIONAL = {
    "a bool in a number column": (
        STRICTER,
        "MLflow scores True as 1.0; a bool where the model wants a measurement is a client "
        "bug, and scoring it is silent damage",
    ),
    "a number in a text column": (
        STRICTER,
        "MLflow scores 7 as the category '7'; a number where the model wants a category is "
        "usually a column mix-up",
    ),
    "a bool in a text column": (STRICTER, "as above: MLflow scores False as the category 'False'"),
    "csv: ragged rows": (
        STRICTER,
        "pandas fills a short CSV line with missing cells; a short line is usually a broken "
        "one, so it is refused naming the line",
    ),
    "no content type": (
        LENIENT,
        "MLflow crashes (500) on a request without Content-Type; ours reads it as JSON, as "
        "before this protocol was complete",
    ),
    "deeply nested json": (BETTER_ERROR, "MLflow's json.loads hits RecursionError: a 500"),
}


def _kind(theirs: int, ours: int) -> str:
    if theirs // 100 == ours // 100:
        return SAME
    if theirs < 300:
        return STRICTER
    if ours < 300:
        return LENIENT
    return BETTER_ERROR if theirs >= 500 and ours < 500 else f"{theirs} vs {ours}"


@pytest.fixture(scope="module")
def mlflow_server(trained: Trained, tmp_path_factory) -> Iterator[str]:
    """`mlflow models serve --env-manager local` on the version trustflow serves. It runs
    uvicorn from PATH, so the venv's bin goes first; its own process group, so that stopping
    it stops its workers too."""
    port = free_port()
    log = tmp_path_factory.mktemp("mlflow-serve") / "server.log"
    env = clean_env(
        MLFLOW_TRACKING_URI=trained.tracking_uri,
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}/{trained.version}",
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url + "/ping", process, timeout=180)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


@pytest.fixture(scope="module")
def ours(trained: Trained) -> Iterator[Server]:
    with serving(trained, f"models:/{MODEL}/{trained.version}") as server:
        yield server


def test_trustflow_serve_answers_as_mlflow_models_serve_does(trained, mlflow_server, ours):
    corpus = build_corpus(trained.rows, label="income")
    assert len(corpus) >= 60
    tally: Counter[str] = Counter()
    differences: dict[str, str] = {}
    # A connection per request: uvicorn closes idle keep-alive connections after 5 s, and a
    # reused one the server just closed reads as a reset.
    with httpx.Client(timeout=120, limits=httpx.Limits(max_keepalive_connections=0)) as http:
        for case in corpus:
            headers = case.request_headers()
            theirs = http.post(f"{mlflow_server}/invocations", content=case.body, headers=headers)
            mine = http.post(f"{ours.url}/invocations", content=case.body, headers=headers)
            assert mine.status_code < 500, (case.name, mine.text)
            if mine.status_code >= 400:
                assert mine.json()["error_code"] and mine.json()["message"], case.name
            kind = _kind(theirs.status_code, mine.status_code)
            tally[kind] += 1
            if kind != SAME:
                differences[case.name] = kind
            elif mine.status_code == 200:
                predictions = mine.json()["predictions"]
                assert predictions == theirs.json()["predictions"], case.name
                if case.expected_rows is not None:
                    expected = trained.native.predict(case.expected_rows).tolist()
                    assert predictions == expected, case.name
    print(f"\n{len(corpus)} requests: " + ", ".join(f"{n} {k}" for k, n in tally.items()))
    for name, kind in differences.items():
        print(f"  {kind}: {name}: {INTENTIONAL.get(name, ('', 'NOT ALLOWED'))[1]}")
    assert differences == {name: kind for name, (kind, _) in INTENTIONAL.items()}


def test_mlflows_client_with_missing_cells(trained, ours):
    """MLflow's ScoringServerClient writes a pandas frame's missing cells as NaN, in number and
    string columns alike; get_version() reads /version."""
    frame = trained.rows.head(30).astype(object).copy()
    frame.loc[0, "workclass"] = math.nan
    frame.loc[1, "age"] = math.nan
    frame = frame.where(frame.notna(), math.nan)  # None/NA as NaN, as a pandas user holds them
    host, port = ours.url.removeprefix("http://").split(":")
    client = ScoringServerClient(host, int(port))
    client.wait_server_ready(timeout=30)
    predictions = client.invoke(frame).get_predictions()
    assert np.array_equal(np.asarray(predictions).ravel(), trained.native.predict(frame))
    assert client.get_version().startswith("trustflow ")


def test_mlflow_models_predict_payloads(trained, ours, tmp_path: Path):
    """The serving example MLflow logged with the model (what `mlflow models predict` and its
    serving-input validation send) and one converted from a frame with missing cells."""
    with pointed_at(trained.tracking_uri):
        model_dir = Path(
            download_artifacts(f"models:/{MODEL}/{trained.version}", dst_path=str(tmp_path))
        )
    logged = (model_dir / "serving_input_example.json").read_text()
    response = ours.post(
        "/invocations", content=logged, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    frame = trained.rows.head(10)
    converted = convert_input_example_to_serving_input(frame)
    assert converted is not None
    response = ours.post(
        "/invocations", content=converted, headers={"Content-Type": "application/json"}
    )
    assert response.json() == {"predictions": trained.native.predict(frame).tolist()}
    assert json.loads(converted).keys() == {"dataframe_split"}
