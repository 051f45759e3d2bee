"""Encrypted inference end to end: a pipeline run with encryption.enabled registers
adult-income-linear after its encryption parity gate; `trustflow serve --encrypted` scores
ciphertexts it cannot read; the Python client and `trustflow predict --encrypted` get what
/v1/predict answers in plaintext; bad input gets a 4xx and the server stays up."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.e2e.processes import BIN, clean_env, free_port
from tests.e2e.serving import Server, Trained, serving, train_champion
from trustflow.client import EncryptedClient, ServerError

pytestmark = pytest.mark.e2e
tenseal = pytest.importorskip("tenseal", reason="tenseal is in the project's encrypted extra")

LINEAR = "adult-income-linear"
# Logistic regression's equalized-odds gap on this sample (0.34) is over the default 0.2 limit;
# a linear release must pass the same gates, so this run raises the limit for both models.
ENCRYPTED_RUN = (
    *("--set", "encryption.enabled=true"),
    *("--set", "fairness.max_equalized_odds_difference=0.4"),
)


@pytest.fixture(scope="module")
def linear(tmp_path_factory, adult_sample: pd.DataFrame) -> Trained:
    return train_champion(tmp_path_factory.mktemp("encrypted"), adult_sample, *ENCRYPTED_RUN)


@pytest.fixture(scope="module")
def server(linear: Trained):
    # 30 MB: a request of 105 ciphertexts is about 25 MB.
    model = f"models:/{LINEAR}@champion"
    with serving(linear, model, "--encrypted", "--max-encrypted-bytes", "30000000") as running:
        yield running


def records(rows: pd.DataFrame) -> list[dict]:
    return [
        {k: (None if pd.isna(v) else v) for k, v in row.items()}
        for row in rows.to_dict(orient="records")
    ]


def test_the_run_registers_a_gated_linear_release(linear: Trained) -> None:
    encryption = linear.summary["encryption"]
    assert encryption["name"] == LINEAR and encryption["candidate"] == "logreg"
    assert encryption["promoted"] and encryption["passed"]
    assert encryption["max_abs_diff"] <= 1e-3 and encryption["label_agreement"] == 1.0

    client = linear.client()
    version = client.get_model_version_by_alias(LINEAR, "champion")
    assert version.tags["trustflow.encryption.passed"] == "true"
    parameters = json.loads(version.tags["trustflow.encryption.parameters"])
    assert parameters["layouts"] == ["packed", "feature-major"]  # the gate checked both
    assert "## Encrypted inference" in version.description  # the model card
    run = client.get_run(linear.summary["mlflow"]["run_id"])
    assert run.data.metrics["encryption.max_abs_diff"] == encryption["max_abs_diff"]


@pytest.mark.parametrize("layout", ["packed", "feature-major"])
def test_encrypted_predictions_match_plaintext(linear: Trained, server: Server, layout: str):
    rows = records(linear.rows)
    plain = server.post("/v1/predict", json={"records": rows}).json()
    with EncryptedClient(server.url, layout=layout) as client:
        encrypted = client.predict(rows)
    print(
        f"\n{layout}, {len(rows)} rows: sent {encrypted.bytes_sent / 1e6:.1f} MB, received "
        f"{encrypted.bytes_received / 1e3:.0f} KB; "
        + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in encrypted.timings.items())
    )
    assert encrypted.model == {"name": LINEAR, "version": linear.summary["encryption"]["version"]}
    assert encrypted.labels == plain["labels"]
    difference = np.abs(np.array(encrypted.probabilities) - np.array(plain["probabilities"]))
    assert difference.max() <= 1e-3


def test_the_cli_prints_predictions_and_probabilities(
    linear: Trained, server: Server, tmp_path: Path
) -> None:
    rows = records(linear.rows.head(5))
    path = tmp_path / "records.json"
    path.write_text(json.dumps({"records": rows}))
    done = subprocess.run(
        [str(BIN / "trustflow"), "predict", "--encrypted", "--url", server.url, str(path),
         "--json"],
        env=clean_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    plain = server.post("/v1/predict", json={"records": rows}).json()
    assert answer["predictions"] == plain["labels"]
    assert np.abs(np.array(answer["probabilities"]) - plain["probabilities"]).max() <= 1e-3


def test_bad_input_gets_a_4xx_and_the_server_stays_up(linear: Trained, server: Server) -> None:
    from trustflow.crypto import ckks

    model = server.get("/v1/encrypted/model").json()
    version, features = model["model"]["version"], model["features"]
    context = ckks.new_context()
    public = ckks.public_context(context)
    context_id = server.post("/v1/encrypted/context", content=public).json()["context_id"]
    major = {"X-Trustflow-Layout": "feature-major"}
    one = ckks.encrypt_features(context, np.zeros((1, features)), ckks.DEFAULT_PARAMS)  # packed
    blob = ckks.unframe(one)[0]
    ragged = tenseal.ckks_vector(context, [0.0] * 5).serialize()
    scaled = ckks.new_context()
    scaled.global_scale = 2.0**30  # a parameter the model cannot use
    too_many = tenseal.ckks_vector(context, [0.0] * 4097).serialize()
    headers = {"X-Trustflow-Context": context_id, "X-Trustflow-Model-Version": version}

    def predict(body: bytes, **changed: str) -> tuple[str, int]:
        response = server.post(
            "/v1/encrypted/predict", content=body, headers={**headers, **changed}
        )
        return response.json()["message"], response.status_code

    def context_post(body: bytes) -> tuple[str, int]:
        response = server.post("/v1/encrypted/context", content=body)
        return response.json()["message"], response.status_code

    cases = [
        (lambda: predict(ckks.frame([b"\x07" * 300])), 400, "not a CKKS vector"),
        (lambda: predict(one[: len(one) // 2]), 400, "truncated body"),
        (lambda: predict(one, **{"X-Trustflow-Context": "f" * 32}), 404, "unknown context id"),
        (
            lambda: predict(one, **{"X-Trustflow-Model-Version": "99"}),
            409,
            "GET /v1/encrypted/model",
        ),
        (lambda: predict(ckks.frame([blob] * 3), **major), 400, f"expected {features} ciphertexts"),
        (lambda: predict(ckks.frame([too_many])), 413, "more values than slots"),
        (lambda: predict(ckks.frame([ragged])), 400, "not whole rows of 128"),
        (lambda: predict(one, **{"X-Trustflow-Layout": "diagonal"}), 400, "unknown layout"),
        (lambda: context_post(context.serialize(save_secret_key=True)), 400, "secret key"),
        (lambda: context_post(b"\x00" * 1000), 400, "not a serialized TenSEAL context"),
        (lambda: context_post(ckks.public_context(scaled)), 400, "this server needs 2^40"),
    ]
    answers = [cases[i % len(cases)][0]() for i in range(200)]
    for i, (message, status) in enumerate(answers):
        _, want_status, want_words = cases[i % len(cases)]
        assert status == want_status and want_words in message, (i, status, message)
    big = server.post("/v1/encrypted/predict", content=b"\x00" * 30_000_001, headers=headers)
    assert big.status_code == 413 and "--max-encrypted-bytes" in big.json()["message"]

    assert server.get("/readyz").status_code == 200
    rows = records(linear.rows.head(3))
    with EncryptedClient(server.url) as client:
        assert len(client.predict(rows).labels) == 3
    with pytest.raises(ServerError, match="409"):  # a client told another version is refused
        client_for_old = EncryptedClient(server.url)
        client_for_old.model = {**client_for_old.model, "version": "0"}
        client_for_old.predict(rows)


def test_only_versions_that_passed_the_gate_are_served_encrypted(linear: Trained) -> None:
    refused = subprocess.run(
        [str(BIN / "trustflow"), "serve", "--model", "models:/adult-income@champion",
         "--encrypted", "--port", str(free_port()), "--workspace", str(linear.workspace)],
        env=clean_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "cannot be served --encrypted: it has no encryption parity result" in refused.stderr
    assert f"These qualify: models:/{LINEAR}@champion, models:/{LINEAR}/1" in refused.stderr

    client = linear.client()  # a version whose encryption parity failed is refused too
    client.set_model_version_tag(LINEAR, "1", "trustflow.encryption.passed", "false")
    try:
        failed = subprocess.run(
            [str(BIN / "trustflow"), "serve", "--model", f"models:/{LINEAR}/1", "--encrypted",
             "--port", str(free_port()), "--workspace", str(linear.workspace)],
            env=clean_env(), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        client.set_model_version_tag(LINEAR, "1", "trustflow.encryption.passed", "true")
    assert failed.returncode == 1
    assert f"{LINEAR} v1 cannot be served --encrypted" in failed.stderr
    assert "No registered version qualifies" in failed.stderr

    with serving(linear, "models:/adult-income@champion") as plain:
        off = plain.get("/v1/encrypted/model")
        assert off.status_code == 404 and "--encrypted" in off.json()["message"]
