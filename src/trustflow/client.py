"""Clients of ``trustflow serve``.

:class:`EncryptedClient` scores rows on a server that never sees them: it fetches the model's
preprocessing graph and runs it locally, makes CKKS keys locally, sends the features encrypted
(packed: a few rows per ciphertext; or feature-major: one ciphertext per feature), up to
``slots`` rows a request, decrypts what the server computed into logits, and applies the
sigmoid. The secret key never leaves this process.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trustflow.errors import TrustflowError


class ServerError(TrustflowError):
    """The server refused a request or could not be reached; the message is its answer."""


@dataclass(frozen=True)
class EncryptedPrediction:
    labels: list[str]
    probabilities: list[list[float]]  # one column per class, as /v1/predict answers
    model: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)  # seconds, by phase
    bytes_sent: int = 0
    bytes_received: int = 0


class EncryptedClient:
    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 300.0,
        layout: str = "packed",
    ) -> None:
        import httpx
        import onnxruntime as ort

        from trustflow.crypto import ckks
        from trustflow.serving.scorer import Signature

        if layout not in ckks.LAYOUTS:
            raise TrustflowError(f"layout '{layout}': one of {', '.join(ckks.LAYOUTS)}")
        self.layout = layout
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        model = self._json(self.http.get("/v1/encrypted/model"))
        self.model: dict[str, str] = model["model"]
        self.classes: list[str] | None = model["classes"]
        self.features = int(model["features"])
        parameters = model["parameters"]
        self.params = ckks.EncryptionParams(
            poly_modulus_degree=parameters["poly_modulus_degree"],
            coeff_mod_bit_sizes=tuple(parameters["coeff_mod_bit_sizes"]),
            scale_bits=parameters["scale_bits"],
        )
        self.front = ort.InferenceSession(
            base64.b64decode(model["front"]), providers=["CPUExecutionProvider"]
        )
        self.signature = Signature(self.front, "the server's preprocessing graph")
        self.context = ckks.new_context(self.params)
        public = ckks.public_context(self.context)
        answer = self._json(
            self.http.post(
                "/v1/encrypted/context",
                content=public,
                headers={"Content-Type": "application/octet-stream"},
            )
        )
        self.context_id: str = answer["context_id"]
        self.context_bytes = len(public)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> EncryptedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _json(response: Any) -> Any:
        if response.status_code >= 400:
            raise ServerError(_message(response))
        return response.json()

    def features_of(self, records: list[dict[str, Any]]) -> np.ndarray:
        """The preprocessing graph on ``records`` (the format /v1/predict takes)."""
        from trustflow.serving.protocol import records_to_columns
        from trustflow.serving.scorer import PayloadError

        try:
            columns, rows = records_to_columns(records, "records", False)
            feed, _ = self.signature.feed(columns, rows)
        except PayloadError as exc:
            raise TrustflowError(exc.message) from None
        return np.asarray(self.front.run(None, feed)[0], dtype=np.float64)

    def predict(self, records: list[dict[str, Any]]) -> EncryptedPrediction:
        from trustflow.crypto import ckks
        from trustflow.crypto.linear import sigmoid

        if not records:
            raise TrustflowError("no records to score")
        timings = dict.fromkeys(("preprocess", "encrypt", "server", "decrypt"), 0.0)
        started = time.perf_counter()
        features = self.features_of(records)
        timings["preprocess"] = time.perf_counter() - started
        logits, sent, received = [], 0, 0
        for first in range(0, len(features), self.params.slots):
            batch = features[first : first + self.params.slots]
            started = time.perf_counter()
            body = ckks.encrypt_features(self.context, batch, self.params, self.layout)
            timings["encrypt"] += time.perf_counter() - started
            started = time.perf_counter()
            response = self.http.post(
                "/v1/encrypted/predict",
                content=body,
                headers={
                    "Content-Type": "application/octet-stream",
                    "X-Trustflow-Context": self.context_id,
                    "X-Trustflow-Model-Version": self.model["version"],
                    "X-Trustflow-Layout": self.layout,
                },
            )
            timings["server"] += time.perf_counter() - started
            if response.status_code >= 400:
                raise ServerError(_message(response))
            sent, received = sent + len(body), received + len(response.content)
            started = time.perf_counter()
            logits.append(
                ckks.decrypt_logits(
                    self.context, response.content, len(batch), self.features, self.layout
                )
            )
            timings["decrypt"] += time.perf_counter() - started
        logit = np.concatenate(logits)
        positive = sigmoid(logit)
        names = self.classes or ["0", "1"]
        return EncryptedPrediction(
            labels=[names[int(z > 0)] for z in logit],
            probabilities=np.column_stack([1.0 - positive, positive]).tolist(),
            model=self.model,
            timings=timings,
            bytes_sent=sent,
            bytes_received=received,
        )


def _message(response: Any) -> str:
    try:
        return f"{response.status_code}: {response.json()['message']}"
    except Exception:
        return f"{response.status_code}: {response.text[:200]}"
