"""Encryption parity task: a linear-headed candidate's ONNX graph split and scored on
encrypted test rows (trustflow.crypto.gate)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.export import ExportedCandidate
from trustflow.config import DatasetSchema, EncryptionConfig
from trustflow.crypto.gate import EncryptionReport, check_encrypted_parity
from trustflow.io import read_frame
from trustflow.refs import DataRef


# Not cached: every check makes fresh keys, and it takes about a second.
@task(name="encrypt", cache_policy=NO_CACHE, persist_result=False)
def check_encryption(
    export: ExportedCandidate, test: DataRef, schema: DatasetSchema, cfg: EncryptionConfig
) -> EncryptionReport:
    assert export.onnx is not None, "the flow checks only candidates that have an ONNX form"
    graph = export.onnx.path.read_bytes()
    return check_encrypted_parity(graph, str(export.onnx.path), read_frame(test), schema, cfg)
