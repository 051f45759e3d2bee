"""The encryption parity gate: a linear-headed model's test rows scored encrypted, as a client
and the server would score them, against the served graph in plaintext."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from trustflow.config import DatasetSchema, EncryptionConfig
from trustflow.crypto.ckks import DEFAULT_PARAMS, encrypted_parity
from trustflow.crypto.linear import split_linear
from trustflow.export.onnx import inference_session, to_feed


class EncryptionReport(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: int
    max_abs_diff: float  # max |p_encrypted - p_plain|
    max_logit_diff: float
    label_agreement: float
    seconds: float
    parameters: dict[str, Any]  # CKKS: degree, moduli, scale, security, layout
    max_abs_diff_limit: float
    min_label_agreement: float

    @property
    def passed(self) -> bool:
        return (
            self.max_abs_diff <= self.max_abs_diff_limit
            and self.label_agreement >= self.min_label_agreement
        )

    def reason(self) -> str:
        measured = (
            f"max |p_enc - p_plain| {self.max_abs_diff:.2e} (limit {self.max_abs_diff_limit:g}), "
            f"labels agree on {self.label_agreement:.2%} of {self.rows:,} rows "
            f"(limit {self.min_label_agreement:.2%})"
        )
        return f"encryption parity {'passed' if self.passed else 'FAILED'}: {measured}"

    def card_section(self) -> str:
        p = self.parameters
        return (
            f"{self.reason()}. CKKS (Microsoft SEAL via TenSEAL): polynomial degree "
            f"{p['poly_modulus_degree']}, coefficient moduli {p['coeff_mod_bit_sizes']} bits, "
            f"scale 2^{p['scale_bits']}, {p['security_bits']}-bit security, depth {p['depth']}, "
            f"up to {p['slots']:,} rows per request; checked in both layouts "
            f"({', '.join(p['layouts'])}). Max logit error {self.max_logit_diff:.2e}; "
            f"{self.seconds:.1f} s to encrypt, evaluate and decrypt."
        )


def check_encrypted_parity(
    graph: bytes, source: str, test: pd.DataFrame, schema: DatasetSchema, cfg: EncryptionConfig
) -> EncryptionReport:
    """Raises NotLinearHeaded for a graph without a linear head."""
    split = split_linear(graph, source)
    rows = test.head(cfg.rows)
    feed = to_feed(rows, schema)
    labels, probabilities = inference_session(graph).run(None, feed)
    features = inference_session(split.front).run(None, feed)[0]
    parity = encrypted_parity(
        np.asarray(features, dtype=np.float64),
        split.weights,
        split.bias,
        np.asarray(probabilities)[:, 1],
        np.asarray(labels).reshape(-1),
    )
    return EncryptionReport(
        rows=parity.rows,
        max_abs_diff=parity.max_abs_diff,
        max_logit_diff=parity.max_logit_diff,
        label_agreement=parity.label_agreement,
        seconds=parity.seconds,
        parameters=DEFAULT_PARAMS.describe(),
        max_abs_diff_limit=cfg.max_abs_diff,
        min_label_agreement=cfg.min_label_agreement,
    )
