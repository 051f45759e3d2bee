"""A Triton Inference Server model repository for a model's ONNX graph:

    <out>/<name>/config.pbtxt   backend onnxruntime; inputs and outputs read from the graph
    <out>/<name>/1/model.onnx

Every input and output of our graphs has a dynamic first (batch) axis, so the config uses
Triton's batching (``max_batch_size``) and lists the other dimensions; a rank-1 output such as
``label`` [batch] is declared as [1] with an empty ``reshape``, as Triton requires.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from trustflow.deploy.bundle import Release, staged_directory
from trustflow.errors import DeployError

# ONNX tensor element types -> Triton data types.
TRITON_TYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.BOOL: "TYPE_BOOL",
    onnx.TensorProto.STRING: "TYPE_STRING",
}
CONFIG = "config.pbtxt"


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str
    dims: list[int]  # without the batch axis; -1 where the graph leaves a size open
    reshape: bool  # rank-1 in the graph: declared [1], reshaped to []


@dataclass(frozen=True)
class TritonRepository:
    path: Path
    config: Path
    inputs: list[Tensor]
    outputs: list[Tensor]
    max_batch_size: int


def _tensor(value: onnx.ValueInfoProto, where: str) -> Tensor:
    tensor_type = value.type.tensor_type
    data_type = TRITON_TYPES.get(tensor_type.elem_type)
    if data_type is None:
        name = onnx.TensorProto.DataType.Name(tensor_type.elem_type)
        raise DeployError(f"{where} '{value.name}' is {name}, which Triton cannot serve")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
    if not dims or dims[0] not in (-1, 0):
        raise DeployError(f"{where} '{value.name}' has no dynamic batch axis (shape {dims})")
    rest = dims[1:]
    return Tensor(value.name, data_type, rest or [1], reshape=not rest)


def tensors(graph: bytes) -> tuple[list[Tensor], list[Tensor]]:
    model = onnx.load_model_from_string(graph)
    initializers = {init.name for init in model.graph.initializer}
    inputs = [_tensor(v, "input") for v in model.graph.input if v.name not in initializers]
    return inputs, [_tensor(v, "output") for v in model.graph.output]


def _block(tensor: Tensor) -> str:
    lines = [
        f"    name: {json.dumps(tensor.name)}",
        f"    data_type: {tensor.data_type}",
        f"    dims: [ {', '.join(str(d) for d in tensor.dims)} ]",
    ]
    if tensor.reshape:
        lines.append("    reshape: { shape: [ ] }")
    return "  {\n" + "\n".join(lines) + "\n  }"


def config_text(release: Release, inputs: list[Tensor], outputs: list[Tensor],
                max_batch_size: int, instances: int, kind: str) -> str:  # fmt: skip
    parts = [
        f"# {release.source} (onnx sha256 {release.sha256}), written by trustflow deploy",
        f"name: {json.dumps(release.image_name)}",
        'backend: "onnxruntime"',
        f"max_batch_size: {max_batch_size}",
        "input [\n" + ",\n".join(_block(t) for t in inputs) + "\n]",
        "output [\n" + ",\n".join(_block(t) for t in outputs) + "\n]",
        f"instance_group [ {{ count: {instances}, kind: {kind} }} ]",
        "dynamic_batching { }",
        "version_policy: { latest: { num_versions: 1 } }",
    ]
    return "\n".join(parts) + "\n"


def write_repository(
    release: Release, out: Path, max_batch_size: int = 256, instances: int = 1, gpu: bool = False
) -> TritonRepository:
    inputs, outputs = tensors(release.graph)
    kind = "KIND_GPU" if gpu else "KIND_CPU"
    with staged_directory(out, f"{release.image_name}/{CONFIG}") as staging:
        model_dir = staging / release.image_name
        (model_dir / "1").mkdir(parents=True)
        (model_dir / "1" / "model.onnx").write_bytes(release.graph)
        text = config_text(release, inputs, outputs, max_batch_size, instances, kind)
        (model_dir / CONFIG).write_text(text)
    return TritonRepository(
        path=out,
        config=out / release.image_name / CONFIG,
        inputs=inputs,
        outputs=outputs,
        max_batch_size=max_batch_size,
    )


def summary(repo: TritonRepository) -> dict[str, Any]:
    return {
        "path": str(repo.path),
        "config": str(repo.config),
        "inputs": len(repo.inputs),
        "outputs": [t.name for t in repo.outputs],
        "max_batch_size": repo.max_batch_size,
    }
