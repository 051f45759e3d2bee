"""`trustflow serve` as users run it: a real process on 127.0.0.1 over a model registered by a
real pipeline run. Every payload format, every refusal, auth, several workers, and an alias
that moves while requests are in flight."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from mlflow.pyfunc.scoring_server.client import ScoringServerClient

import trustflow
from tests.conftest import mlflow_payloads
from tests.e2e.processes import BIN, clean_env, free_port, pointed_at
from tests.e2e.serving import MODEL, Server, Trained, serving

pytestmark = [pytest.mark.e2e]


@pytest.fixture(scope="module")
def champion_server(trained: Trained) -> Iterator[Server]:
    with serving(trained, f"models:/{MODEL}@champion", "--max-rows", "500") as server:
        yield server


def test_every_mlflow_format_gives_the_native_models_predictions(trained, champion_server):
    expected = trained.native.predict(trained.rows).tolist()
    for name, payload in mlflow_payloads(trained.rows).items():
        response = champion_server.post("/invocations", json=payload)
        assert response.status_code == 200, (name, response.text)
        assert response.json() == {"predictions": expected}, name
    csv = champion_server.post(
        "/invocations",
        content=trained.rows.to_csv(index=False),
        headers={"Content-Type": "text/csv"},
    )
    assert csv.json() == {"predictions": expected}


def test_mlflows_own_client_works_unchanged(trained, champion_server):
    host, port = champion_server.url.removeprefix("http://").split(":")
    client = ScoringServerClient(host, int(port))
    client.wait_server_ready(timeout=10)  # polls /ping, as MLflow does
    predictions = client.invoke(trained.rows.head(20)).get_predictions()
    expected = trained.native.predict(trained.rows.head(20))
    assert np.array_equal(np.asarray(predictions).ravel(), expected)


def test_v1_predict_returns_labels_and_probabilities(trained, champion_server):
    records = json.loads(trained.rows.head(50).to_json(orient="records"))
    body = champion_server.post("/v1/predict", json={"records": records}).json()

    assert body["model"] == {"name": MODEL, "version": trained.version}
    assert body["classes"] == ["<=50K", ">50K"]
    native = trained.native.predict_proba(trained.rows.head(50))
    assert np.abs(np.asarray(body["probabilities"]) - native).max() <= 1e-4
    expected = [body["classes"][i] for i in trained.native.predict(trained.rows.head(50))]
    assert body["labels"] == expected


def _refusal(server: Server, **request) -> tuple[int, str]:
    response = server.post("/invocations", **request)
    assert response.json()["error_code"]  # MLflow's error shape
    return response.status_code, response.json()["message"]


def test_bad_requests_are_refused_naming_the_field_and_the_server_stays_up(
    trained, champion_server
):
    record = json.loads(trained.rows.head(1).to_json(orient="records"))[0]
    missing = {k: v for k, v in record.items() if k != "age"}
    wrong_number = {**record, "age": "forty"}
    wrong_text = {**record, "sex": 1}
    boolean = {**record, "hours_per_week": True}
    cases = [
        ({"dataframe_records": [missing]}, 400, "missing column 'age'"),
        ({"dataframe_records": [wrong_number]}, 400, "column 'age' row 0: expected a number"),
        ({"dataframe_records": [wrong_text]}, 400, "column 'sex' row 0: expected a string"),
        ({"dataframe_records": [boolean]}, 400, "column 'hours_per_week' row 0"),
        ({"dataframe_records": [record] * 501}, 413, "501 rows exceed the limit of 500"),
        ({"dataframe_records": []}, 400, "no rows"),
        ({"records": [record]}, 400, "exactly one of"),
        ({"inputs": {"age": [1, 2], "sex": ["Male"]}}, 400, "same length"),
    ]
    for payload, status, message in cases:
        got_status, got_message = _refusal(champion_server, json=payload)
        assert (got_status, message in got_message) == (status, True), got_message

    as_json = {"Content-Type": "application/json"}
    assert _refusal(champion_server, content=b"{not json", headers=as_json)[0] == 400
    plain = {"Content-Type": "text/plain"}
    assert _refusal(champion_server, content=b"x", headers=plain)[0] == 415
    too_big = b"[" + b" " * (4 * 1024 * 1024) + b"]"
    status, message = _refusal(champion_server, content=too_big, headers=as_json)
    assert status == 413 and "raise it with --max-body-bytes" in message

    # Still up, still right.
    after = champion_server.post("/invocations", json={"dataframe_records": [record]})
    assert after.status_code == 200
    metrics = champion_server.get("/metrics").text
    assert 'trustflow_request_errors_total{endpoint="invocations",status="413"}' in metrics
    assert 'trustflow_request_duration_seconds_bucket{endpoint="invocations",le="0.01"}' in metrics


def test_strict_refuses_what_mlflow_drops(trained):
    record = json.loads(trained.rows.head(1).to_json(orient="records"))[0]
    with_label = {"dataframe_records": [{**record, "income": ">50K"}]}
    with serving(trained, f"models:/{MODEL}/{trained.version}", "--strict") as strict:
        refused = strict.post("/invocations", json=with_label)
        assert refused.status_code == 400
        assert "unknown column 'income'" in refused.json()["message"]
        assert strict.post("/invocations", json={**with_label, "id": 1}).status_code == 400


def test_unused_columns_are_dropped_and_named(trained, champion_server):
    record = json.loads(trained.rows.head(1).to_json(orient="records"))[0]
    response = champion_server.post(
        "/v1/predict", json={"records": [{**record, "income": ">50K", "id": 7}]}
    )
    assert response.status_code == 200
    assert response.headers["X-Trustflow-Dropped-Columns"] == "income,id"
    plain = champion_server.post("/v1/predict", json={"records": [record]})
    assert plain.json()["probabilities"] == response.json()["probabilities"]
    assert "X-Trustflow-Dropped-Columns" not in plain.headers


def test_health_readiness_and_openapi(trained, champion_server):
    assert champion_server.get("/healthz").json() == {"status": "ok"}
    assert champion_server.get("/health").status_code == 200  # MLflow's names for it
    assert champion_server.get("/ping").status_code == 200
    assert champion_server.get("/version").text == f"trustflow {trustflow.__version__}"
    ready = champion_server.get("/readyz").json()
    assert ready["model"] == {"name": MODEL, "version": trained.version}
    assert ready["providers"] == ["CPUExecutionProvider"]  # no GPU on the test machine
    spec = champion_server.get("/openapi.json").json()
    assert {"/invocations", "/v1/predict", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])


def test_bearer_token_is_required_when_configured(trained):
    model = f"models:/{MODEL}/{trained.version}"
    record = json.loads(trained.rows.head(1).to_json(orient="records"))
    payload = {"dataframe_records": record}
    bad_headers = [
        {},
        {"Authorization": "Bearer no"},
        {"Authorization": ""},
        {"Authorization": "Basic czNjcmV0Og=="},
        {"Authorization": "s3cret"},
        {"Authorization": "Bearer s3cret\u00e9".encode("latin-1")},  # a non-ASCII byte
        {"Authorization": b"Bearer \xff\xfe"},
    ]
    with serving(trained, model, TRUSTFLOW_SERVE_TOKEN="s3cret") as server:
        for headers in bad_headers:
            denied = server.post("/invocations", json=payload, headers=headers)
            assert denied.status_code == 401, headers
            assert denied.headers["WWW-Authenticate"].startswith("Bearer"), headers
            assert denied.json()["error_code"] == "UNAUTHENTICATED"
        allowed = server.post(
            "/invocations", json=payload, headers={"Authorization": "Bearer s3cret"}
        )
        assert allowed.status_code == 200
        # Only the probes are open (README: Serving); everything else needs the token.
        for path in ("/metrics", "/ping", "/health", "/version", "/docs", "/openapi.json"):
            assert server.get(path).status_code == 401, path
            assert server.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == (
                200
            ), path
        for path in ("/healthz", "/readyz"):
            assert server.get(path).status_code == 200, path
        stderr = _stop(server)
    assert "Traceback" not in stderr


def _stop(server: Server) -> str:
    server.process.terminate()
    server.process.wait(timeout=30)
    return server.process.stderr.read() if server.process.stderr else ""


def test_several_workers_answer_and_share_their_metrics(trained):
    record = json.loads(trained.rows.head(1).to_json(orient="records"))
    with serving(trained, f"models:/{MODEL}@champion", "--workers", "2") as server:
        for _ in range(40):
            response = server.post("/invocations", json={"dataframe_records": record})
            assert response.status_code == 200
        metrics = server.get("/metrics").text
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith('trustflow_requests_total{endpoint="invocations",status="200"}')
    )
    assert float(line.split()[-1]) == 40.0  # summed over both processes


def _logged_model(trained: Trained, candidate: str) -> str:
    client = trained.client()
    experiments = [e.experiment_id for e in client.search_experiments()]
    found = client.search_logged_models(
        experiment_ids=experiments, filter_string=f"name = '{candidate}'", max_results=1
    )
    return found[0].model_id


def _register(trained: Trained, candidate: str, parity_passed: bool) -> str:
    client = trained.client()
    model_id = _logged_model(trained, candidate)
    with pointed_at(trained.tracking_uri):  # MLflow resolves a models:/ source globally
        version = client.create_model_version(
            MODEL,
            source=f"models:/{model_id}",
            model_id=model_id,
            tags={
                "trustflow.onnx.parity_passed": str(parity_passed).lower(),
                "trustflow.onnx.parity": "ONNX parity failed: test" if not parity_passed else "ok",
            },
        )
    return str(version.version)


def test_a_new_champion_is_picked_up_without_failing_requests(trained):
    client = trained.client()
    champion = client.get_model_version_by_alias(MODEL, "champion")
    original = str(champion.version)
    other = "logreg" if champion.tags["trustflow.candidate"] == "hgb" else "hgb"
    record = json.loads(trained.rows.head(1).to_json(orient="records"))
    statuses: list[int] = []
    versions: set[str] = set()
    stop = threading.Event()

    def hammer(url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                response = http.post("/v1/predict", json={"records": record})
                statuses.append(response.status_code)
                versions.add(response.json().get("model", {}).get("version", "?"))

    with serving(trained, f"models:/{MODEL}@champion", "--poll-seconds", "0.3") as server:
        load = threading.Thread(target=hammer, args=(server.url,))
        load.start()
        try:
            rejected = _register(trained, other, parity_passed=False)
            client.set_registered_model_alias(MODEL, "champion", rejected)
            time.sleep(1.5)  # several polls: the failed-parity version must not be served
            assert server.get("/readyz").json()["model"]["version"] == original

            new = _register(trained, other, parity_passed=True)
            client.set_registered_model_alias(MODEL, "champion", new)
            deadline = time.monotonic() + 20
            while server.get("/readyz").json()["model"]["version"] != new:
                assert time.monotonic() < deadline, "the new champion was not picked up"
                time.sleep(0.2)
            time.sleep(0.5)
        finally:
            stop.set()
            load.join()
            client.set_registered_model_alias(MODEL, "champion", original)
        metrics = server.get("/metrics").text

    assert statuses and set(statuses) == {200}  # not one request failed across the swap
    assert versions == {original, new}
    assert 'trustflow_model_reloads_total{outcome="rejected"} 1.0' in metrics


def test_serving_an_onnx_file_follows_changes_to_it(trained, tmp_path):
    onnx_dir = trained.workspace / ".trustflow" / "artifacts" / "onnx"
    graphs = sorted(onnx_dir.glob("*.onnx"))
    assert len(graphs) == 2  # one per candidate
    served = tmp_path / "model.onnx"
    served.write_bytes(graphs[0].read_bytes())
    with serving(trained, str(served), "--poll-seconds", "0.3") as server:
        first = server.get("/readyz").json()["model"]
        assert first["name"] == "model"
        replacement = tmp_path / "next.onnx"
        replacement.write_bytes(graphs[1].read_bytes())
        replacement.replace(served)  # atomic, as a deploy would do it
        deadline = time.monotonic() + 10
        while server.get("/readyz").json()["model"] == first:
            assert time.monotonic() < deadline, "the changed file was not picked up"
            time.sleep(0.2)


@pytest.mark.parametrize(
    ("model", "args", "message"),
    [
        (f"models:/{MODEL}@nobody", (), "not in the registry"),
        (f"models:/{MODEL}/99", (), "not in the registry"),
        ("weights.pkl", (), "expected models:/NAME@ALIAS"),
        ("missing.onnx", (), "cannot read the model"),
        (f"models:/{MODEL}@champion", ("--device", "cuda"), "no CUDAExecutionProvider"),
        (f"models:/{MODEL}@champion", ("--max-rows", "0"), "--max-rows"),
    ],
)
def test_a_server_that_cannot_start_says_why_in_one_line(trained, model, args, message):
    done = subprocess.run(
        [str(BIN / "trustflow"), "serve", "--model", model, "--port", str(free_port()),
         "--workspace", str(trained.workspace), *args],
        env=clean_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_version_that_failed_parity_is_not_served(trained):
    version = _register(trained, "logreg", parity_passed=False)
    done = subprocess.run(
        [str(BIN / "trustflow"), "serve", "--model", f"models:/{MODEL}/{version}",
         "--port", str(free_port()), "--workspace", str(trained.workspace)],
        env=clean_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert f"{MODEL} v{version} cannot be served: ONNX parity failed" in done.stderr


def test_a_port_in_use_is_one_clear_line(trained, champion_server):
    port = champion_server.url.rsplit(":", 1)[1]
    done = subprocess.run(
        [str(BIN / "trustflow"), "serve", "--model", f"models:/{MODEL}@champion",
         "--port", port, "--workspace", str(trained.workspace)],
        env=clean_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
