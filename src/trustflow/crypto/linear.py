"""Split an exported model into its preprocessing graph and its linear head.

A logistic regression exported by skl2onnx ends in ``MatMul(features, coef) -> Add(intercept)
-> Sigmoid``. Everything before the MatMul (imputation, scaling, one-hot encoding) is the
*front*: an ONNX graph the client runs on its own rows, in plaintext. The head is a weight
vector and a bias: ``logit = features · w + b``, ``p = sigmoid(logit)``, ``label = logit > 0``.
The split reads the registered ONNX file alone, so it is exactly the served model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from trustflow.errors import TrustflowError
from trustflow.export.metadata import METADATA_CLASSES


class NotLinearHeaded(TrustflowError):
    """A model whose scores do not come from one linear layer and a sigmoid."""


@dataclass(frozen=True)
class LinearSplit:
    front: bytes  # ONNX: the model's input columns -> (n, features) numbers
    front_output: str
    weights: np.ndarray  # (features,), for the positive class (class 1)
    bias: float
    classes: list[str] | None

    @property
    def features(self) -> int:
        return int(self.weights.shape[0])

    def logits(self, features: np.ndarray) -> np.ndarray:
        """The head in plaintext: what the encrypted evaluation must reproduce."""
        return np.asarray(np.asarray(features, dtype=np.float64) @ self.weights + self.bias)


def split_linear(graph: bytes, source: str) -> LinearSplit:
    """The front graph and the head of a binary linear classifier; NotLinearHeaded (naming the
    source and what was found instead) for anything else."""
    model = onnx.load_from_string(graph)
    constants = {init.name: init for init in model.graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def only_consumer(name: str, op_types: set[str]) -> Any:
        nodes = consumers.get(name, [])
        return nodes[0] if len(nodes) == 1 and nodes[0].op_type in op_types else None

    heads = []
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in constants:
            continue
        add = only_consumer(node.output[0], {"Add"})
        if add is None or not (set(add.input) - {node.output[0]}) <= set(constants):
            continue
        scores = add.output[0]
        if any(n.op_type == "Sigmoid" for n in consumers.get(scores, [])):
            bias_name = next(name for name in add.input if name != node.output[0])
            heads.append((node, constants[node.input[1]], constants[bias_name]))
    if len(heads) != 1:
        ops = sorted({node.op_type for node in model.graph.node})
        raise NotLinearHeaded(
            f"{source}: not a linear-headed model (no single MatMul + Add + Sigmoid head; its "
            f"operators are {', '.join(ops)}); only logistic regression serves encrypted"
        )
    matmul, coef_init, bias_init = heads[0]
    coef = numpy_helper.to_array(coef_init).astype(np.float64)
    bias = numpy_helper.to_array(bias_init).astype(np.float64).reshape(-1)
    if coef.ndim != 2 or coef.shape[1] not in (1, 2):
        raise NotLinearHeaded(
            f"{source}: a head of shape {list(coef.shape)} is not binary; encrypted serving "
            "evaluates one logit per row"
        )
    if coef.shape[1] == 2:
        # skl2onnx writes a binary head as two columns, [-w, w]: scores (-z, z), and the
        # normalised sigmoids give sigmoid(z) for class 1.
        if not (np.allclose(coef[:, 0], -coef[:, 1]) and np.isclose(bias[0], -bias[1])):
            raise NotLinearHeaded(f"{source}: a two-column head that is not [-w, w]")
        weights, intercept = coef[:, 1], float(bias[1])
    else:
        weights, intercept = coef[:, 0], float(bias[0])

    features = matmul.input[0]
    front = _front_graph(model, features, coef_init.data_type, coef.shape[0])
    classes = {p.key: p.value for p in model.metadata_props}.get(METADATA_CLASSES)
    return LinearSplit(
        front=front,
        front_output=features,
        weights=weights,
        bias=intercept,
        classes=json.loads(classes) if classes else None,
    )


def _front_graph(model: onnx.ModelProto, output: str, elem_type: int, width: int) -> bytes:
    """The nodes ``output`` depends on, as a graph with the model's inputs, opsets and
    metadata, whose one output is ``output``: (n, width) of MatMul's element type."""
    producers = {out: node for node in model.graph.node for out in node.output}
    needed, stack = set(), [output]
    while stack:
        node = producers.get(stack.pop())
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            stack.extend(node.input)
    nodes = [node for node in model.graph.node if id(node) in needed]  # in the original order
    used = {name for node in nodes for name in node.input}
    graph = onnx.helper.make_graph(
        nodes,
        "front",
        list(model.graph.input),
        [onnx.helper.make_tensor_value_info(output, elem_type, [None, width])],
        initializer=[init for init in model.graph.initializer if init.name in used],
    )
    front = onnx.helper.make_model(
        graph, opset_imports=list(model.opset_import), ir_version=model.ir_version
    )
    front.metadata_props.extend(model.metadata_props)
    return bytes(front.SerializeToString())


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
