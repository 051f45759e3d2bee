"""The inference server under faults: an alias moved to a version whose ONNX file is corrupt,
and a flood of malformed requests. (Hot swap under steady load: tests/e2e/test_serve.py.)"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.processes import pointed_at
from tests.e2e.serving import MODEL, Trained, serving

pytestmark = [pytest.mark.faults, pytest.mark.e2e]


def _register_corrupt_version(trained: Trained, tmp_path: Path) -> str:
    """A version that passed its gates (as its tags say) but whose model.onnx is truncated,
    as a disk fault or a half-copied artifact store would leave it."""
    champion = trained.client().get_model_version_by_alias(MODEL, "champion")
    with pointed_at(trained.tracking_uri):
        import mlflow

        good = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{MODEL}/{champion.version}/model.onnx",
                dst_path=str(tmp_path / "good"),
            )
        ).read_bytes()
        model_dir = tmp_path / "corrupt"
        model_dir.mkdir()
        (model_dir / "model.onnx").write_bytes(good[: len(good) // 3])
        version = trained.client().create_model_version(
            MODEL,
            source=str(model_dir),
            tags={"trustflow.onnx.parity_passed": "true", "trustflow.onnx.parity": "ok"},
        )
    return str(version.version)


def _metric(metrics: str, name: str) -> float:
    line = next((line for line in metrics.splitlines() if line.startswith(name + " ")), None)
    return float(line.split()[-1]) if line else 0.0


def test_a_corrupt_new_champion_is_not_served_and_is_counted(trained, tmp_path):
    client = trained.client()
    original = str(client.get_model_version_by_alias(MODEL, "champion").version)
    corrupt = _register_corrupt_version(trained, tmp_path)
    record = json.loads(trained.rows.head(1).to_json(orient="records"))
    failed_reload = 'trustflow_model_reloads_total{outcome="error"}'
    with serving(trained, f"models:/{MODEL}@champion", "--poll-seconds", "0.3") as server:
        before = _metric(server.get("/metrics").text, failed_reload)
        try:
            client.set_registered_model_alias(MODEL, "champion", corrupt)
            deadline = time.monotonic() + 30
            while _metric(server.get("/metrics").text, failed_reload) == before:
                assert time.monotonic() < deadline, "the failed reload was never counted"
                time.sleep(0.2)
            time.sleep(1.0)  # several more polls: counted and logged once, not per poll
            assert _metric(server.get("/metrics").text, failed_reload) == before + 1
            assert server.get("/readyz").json()["model"]["version"] == original
            answer = server.post("/v1/predict", json={"records": record})
            assert answer.status_code == 200
            assert answer.json()["model"]["version"] == original
        finally:
            client.set_registered_model_alias(MODEL, "champion", original)
        server.process.terminate()
        server.process.wait(timeout=30)
        log = server.process.stderr.read() if server.process.stderr else ""
    lines = [line for line in log.splitlines() if "not a loadable ONNX model" in line]
    assert len(lines) == 1, log
    assert f"models:/{MODEL}/{corrupt}" in lines[0] and "keeping the current model" in lines[0]
    assert "Traceback" not in log


def test_memory_stays_flat_across_malformed_requests(trained):
    record = json.loads(trained.rows.head(1).to_json(orient="records"))[0]
    malformed = [
        (b"{not json", "application/json"),
        (json.dumps({"dataframe_records": [{**record, "age": "forty"}]}).encode(), None),
        (json.dumps({"dataframe_records": [{**record, "sex": 1}]}).encode(), None),
        (json.dumps({"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}}).encode(), None),
        (json.dumps({"inputs": {"age": [1, 2], "sex": ["x"]}}).encode(), None),
        (b"[" * 5_000 + b"]" * 5_000, "application/json"),
        (b"age,sex\n1\n", "text/csv"),
        ("age\nCôte\n".encode("latin-1"), "text/csv"),
        (b"x", "text/plain"),
        (b"PAR1 nope", "application/vnd.apache.parquet"),
    ]

    def flood(http: httpx.Client, count: int) -> None:
        for i in range(count):
            body, content_type = malformed[i % len(malformed)]
            headers = {"Content-Type": content_type or "application/json"}
            status = http.post("/invocations", content=body, headers=headers).status_code
            assert 400 <= status < 500, (body[:60], status)

    with serving(trained, f"models:/{MODEL}/{trained.version}") as server:
        process = psutil.Process(server.process.pid)
        with httpx.Client(base_url=server.url, timeout=30) as http:
            flood(http, 1_000)  # warm: allocator pools, caches, first-use imports
            before = process.memory_info().rss
            flood(http, 10_000)
            after = process.memory_info().rss
            ok = http.post("/invocations", json={"dataframe_records": [record]})
    assert ok.status_code == 200
    growth = (after - before) / before
    print(f"\nRSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB ({growth:+.1%}) over 10,000")
    assert abs(growth) <= 0.10
