"""The encryption parity gate's result, on the pipeline run and on the registered version."""

from __future__ import annotations

import json

from mlflow.tracking import MlflowClient

from tasks.tracking.tags import ENCRYPTION_PASSED_TAG
from trustflow.crypto.gate import EncryptionReport


def record_encryption(run_id: str, name: str, version: str, report: EncryptionReport) -> None:
    client = MlflowClient()
    for key, value in (
        ("max_abs_diff", report.max_abs_diff),
        ("max_logit_diff", report.max_logit_diff),
        ("label_agreement", report.label_agreement),
        ("seconds", report.seconds),
    ):
        client.log_metric(run_id, f"encryption.{key}", value)
    client.set_model_version_tag(name, version, ENCRYPTION_PASSED_TAG, str(report.passed).lower())
    client.set_model_version_tag(name, version, "trustflow.encryption", report.reason())
    client.set_model_version_tag(
        name, version, "trustflow.encryption.parameters", json.dumps(report.parameters)
    )
