"""The registry as a model source for the inference server: light (MLflow only, no Prefect),
so `trustflow serve` starts fast."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.tracking.tags import ENCRYPTION_PASSED_TAG, FAIRNESS_PASSED_TAG, PARITY_PASSED_TAG
from trustflow.serving.scorer import ModelLoadError, ModelRejected, ModelRelease

MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class RegistrySource:
    """Releases of a registered model for the inference server: ``models:/NAME@ALIAS`` follows
    the alias (a new champion is a new release), ``models:/NAME/VERSION`` stays put. Only the
    ONNX form is fetched, and only from versions that passed their parity and fairness gates
    (and, to be served ``encrypted``, the encryption parity gate)."""

    def __init__(self, uri: str, encrypted: bool = False) -> None:
        self.encrypted = encrypted
        match = MODEL_URI.match(uri)
        if match is None:
            raise ModelLoadError(
                f"model URI '{uri}': expected models:/NAME@ALIAS, models:/NAME/VERSION or a "
                "path to an .onnx file"
            )
        self.name, self.alias, self.version = match["name"], match["alias"], match["version"]
        self.description = uri

    def model_version(self) -> Any:
        client = MlflowClient()
        try:
            if self.alias is not None:
                return client.get_model_version_by_alias(self.name, self.alias)
            return client.get_model_version(self.name, self.version)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise ModelLoadError(
                    f"{self.description}: not in the registry at {mlflow.get_registry_uri()} "
                    f"({exc.message})"
                ) from None
            raise

    def fetch(self, version: Any) -> ModelRelease:
        label = f"{self.name} v{version.version}"
        if version.tags.get(PARITY_PASSED_TAG) != "true":
            reason = version.tags.get("trustflow.onnx.parity", "no ONNX parity result recorded")
            raise ModelRejected(f"{label} cannot be served: {reason}")
        if version.tags.get(FAIRNESS_PASSED_TAG) == "false":
            reason = version.tags.get("trustflow.fairness", "fairness gate failed")
            raise ModelRejected(f"{label} cannot be served: it failed the fairness gate ({reason})")
        if self.encrypted and version.tags.get(ENCRYPTION_PASSED_TAG) != "true":
            reason = version.tags.get("trustflow.encryption", "it has no encryption parity result")
            raise ModelRejected(
                f"{label} cannot be served --encrypted: {reason}. {encrypted_versions()}"
            )
        with tempfile.TemporaryDirectory(prefix="trustflow-serve-") as tmp:
            try:
                path = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{self.name}/{version.version}/model.onnx", dst_path=tmp
                )
            except (MlflowException, OSError) as exc:
                raise ModelLoadError(f"{label} has no ONNX form to serve ({exc})") from None
            graph = Path(path).read_bytes()
        return ModelRelease(
            name=self.name,
            version=str(version.version),
            source=f"models:/{self.name}/{version.version}",
            graph=graph,
        )

    def load(self) -> ModelRelease:
        return self.fetch(self.model_version())

    def poll(self, current: ModelRelease) -> ModelRelease | None:
        if self.alias is None:
            return None
        version = self.model_version()
        return None if str(version.version) == current.version else self.fetch(version)


def encrypted_versions() -> str:
    """Which registered versions may be served encrypted, as one sentence."""
    client = MlflowClient()
    versions = [
        v
        for v in client.search_model_versions(f"tags.`{ENCRYPTION_PASSED_TAG}` = 'true'")
        if v.tags.get(PARITY_PASSED_TAG) == "true" and v.tags.get(FAIRNESS_PASSED_TAG) != "false"
    ]
    if not versions:
        return (
            "No registered version qualifies: train with `--set encryption.enabled=true` (it "
            "registers the best logistic regression as <model_name>-linear)"
        )
    qualifying = {(v.name, str(v.version)) for v in versions}
    uris = [f"models:/{name}/{version}" for name, version in sorted(qualifying)]
    aliased = [
        f"models:/{name}@{alias}"
        for name in sorted({name for name, _ in qualifying})
        for alias, version in sorted(client.get_registered_model(name).aliases.items())
        if (name, str(version)) in qualifying
    ]
    return "These qualify: " + ", ".join(aliased + uris)


def input_example(name: str, version: str) -> dict[str, list[Any]]:
    """The version's MLflow input example (rows the pipeline logged with it), as columns."""
    with tempfile.TemporaryDirectory(prefix="trustflow-deploy-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}/input_example.json", dst_path=tmp
            )
        except (MlflowException, OSError):
            return {}
        example = json.loads(Path(path).read_text())
    columns = example.get("columns", [])
    return {column: [row[i] for row in example.get("data", [])] for i, column in enumerate(columns)}
