"""Logged models: logged once per content hash, reused or registered only when whole."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import onnx
import onnxruntime
import pandas as pd
import sklearn
from mlflow.entities import LoggedModel, LoggedModelStatus
from mlflow.models import Model, infer_signature
from mlflow.tracking import MlflowClient
from mlflow.utils.file_utils import local_file_uri_to_path

from tasks.export import ExportedCandidate
from tasks.tracking.tags import FILES_SHA_TAG, ONNX_SHA_TAG, REGISTRY_FILES, SHA_TAG
from trustflow.io import tree_digest

# Declared rather than inferred: inference imports the model in a subprocess (seconds per model).
MODEL_REQUIREMENTS = [
    f"scikit-learn=={sklearn.__version__}",
    f"pandas=={pd.__version__}",
    f"numpy=={np.__version__}",
    f"onnx=={onnx.__version__}",
    f"onnxruntime=={onnxruntime.__version__}",
]


def skops_trusted_types(model: Any) -> list[str]:
    """MLflow saves scikit-learn models with skops (no pickle), which loads only the types it is
    told to trust. We trained every model in this run, so its types are trusted by construction:
    list them from the model itself. Anything else stays refused."""
    import skops.io

    return list(skops.io.get_untrusted_types(data=skops.io.dumps(model)))


def content_tags(model_sha256: str, export: ExportedCandidate) -> dict[str, str]:
    """What a logged model or a registered version holds: the native model and its ONNX form.
    Equal tags mean equal content, so it is reused instead of logged or registered again."""
    return {SHA_TAG: model_sha256, ONNX_SHA_TAG: export.onnx.sha256 if export.onnx else "none"}


def content_filter(tags: dict[str, str]) -> str:
    return " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())


@contextlib.contextmanager
def _local_files(artifact_location: str) -> Iterator[Path]:
    """The files of a logged model as a local directory: in place for a local store, else a
    temporary download."""
    if artifact_location.startswith("file:"):
        yield Path(local_file_uri_to_path(artifact_location))  # type: ignore[no-untyped-call]
        return
    with tempfile.TemporaryDirectory(prefix="trustflow-verify-") as tmp:
        yield Path(mlflow.artifacts.download_artifacts(artifact_location, dst_path=tmp))


def logged_model_problem(model_id: str) -> str | None:
    """None when the logged model ``model_id`` is whole, else what is wrong with it."""
    return model_problem(MlflowClient().get_logged_model(model_id))


def model_problem(model: LoggedModel) -> str | None:
    """None when the logged model is whole: READY, with files that hash to what was recorded
    once they were uploaded; else what is wrong with it. MLflow writes a model's tags before its
    files, so tags alone never prove a model is there."""
    if model.status != LoggedModelStatus.READY:
        return f"its status is {model.status}"
    recorded = model.tags.get(FILES_SHA_TAG)
    if recorded is None:
        return "no hash of its files was recorded"
    with _local_files(model.artifact_location) as root:
        actual = tree_digest(root, REGISTRY_FILES) if root.is_dir() else "no files"
    if actual != recorded:
        return f"its files hash to {actual[:12]}, not the recorded {recorded[:12]}"
    return None


def find_logged_model(experiment_id: str, tags: dict[str, str]) -> str | None:
    """A whole logged model with these content tags, if there is one."""
    found = mlflow.search_logged_models(
        experiment_ids=[experiment_id],
        filter_string=content_filter(tags),
        output_format="list",
    )
    for model in found:
        if model_problem(model) is None:
            return str(model.model_uri)
    return None


def log_model_once(
    experiment_id: str,
    content: dict[str, str],
    name: str,
    model: Any,
    onnx_path: Path | None,
    example: pd.DataFrame,
    requirements: list[str],
) -> str:
    """Into the active run: the model with its ONNX form, or the whole logged model that has the
    same content already (tagged ``trustflow.model_reused``). Once the files are uploaded, their
    hash is recorded on the logged model; only a model with that record is ever reused or
    registered."""
    uri = find_logged_model(experiment_id, content)
    if uri is not None:
        mlflow.set_tag("trustflow.model_reused", uri)
        return uri
    info = Model.log(
        artifact_path=None,
        name=name,
        flavor=SklearnWithOnnx(onnx_path),
        sk_model=model,
        signature=infer_signature(example, model.predict(example)),
        input_example=example,
        pip_requirements=requirements,
        tags=content,
        skops_trusted_types=skops_trusted_types(model),
    )
    client = MlflowClient()
    logged = client.get_logged_model(info.model_id)
    with _local_files(logged.artifact_location) as root:
        digest = tree_digest(root, REGISTRY_FILES)
    client.set_logged_model_tags(info.model_id, {FILES_SHA_TAG: digest})
    return str(info.model_uri)


class SklearnWithOnnx:
    """A flavor module for ``Model.log``: the scikit-learn flavor and, when given, the ONNX form
    of the same pipeline in one MLflow model, so ``models:/NAME@ALIAS`` loads either way
    (``mlflow.sklearn.load_model`` or ``mlflow.onnx.load_model``) and both share the signature."""

    __name__ = "sklearn"

    def __init__(self, onnx_path: Path | None) -> None:
        self.onnx_path = onnx_path

    def save_model(self, path: str, mlflow_model: Model, **kwargs: Any) -> None:
        mlflow.sklearn.save_model(path=path, mlflow_model=mlflow_model, **kwargs)
        if self.onnx_path is None:
            return
        shutil.copyfile(self.onnx_path, Path(path) / "model.onnx")
        mlflow_model.add_flavor(
            "onnx",
            onnx_version=onnx.__version__,
            data="model.onnx",
            providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
        )
        mlflow_model.save(str(Path(path) / "MLmodel"))
