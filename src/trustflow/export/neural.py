"""ONNX graphs for the Lightning networks: ``torch.onnx.export`` (dynamo exporter, dynamic batch
axis) of the network with its softmax, joined behind a front graph that turns trustflow's
per-column (n, 1) inputs into the network's feature matrix: the shared preprocessor (converted by
skl2onnx) for the tabular MLP, a Concat of the pixel columns for the digits CNN. An ArgMax adds
the ``label`` output, so every graph has the same outputs as the scikit-learn ones."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, helper

NETWORK_INPUT = "features"
# torch.export traces in process-wide state ("ProxyTorchDispatchMode slot already occupied" when
# two candidates export at once, as two DP-SGD networks do), and the stdout redirect and warning
# filters below are process-wide too: one network export at a time.
_EXPORTING = threading.Lock()


def network_graph(
    network: Any, inputs: int, opset: int, regression: bool = False
) -> onnx.ModelProto:
    """The network (logits) with a softmax, as ONNX: input ``features`` [batch, inputs] float,
    output ``probabilities`` [batch, classes]; a regressor's output is its ``value`` [batch, 1]
    as it is."""
    import torch

    class Probabilities(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            output = self.network(features)
            return output if regression else torch.softmax(output, dim=1)

    for name in ("torch.onnx", "onnxscript", "onnx_ir"):  # progress and "torchvision missing"
        logging.getLogger(name).setLevel(logging.ERROR)
    example = torch.zeros(2, inputs, dtype=torch.float32)
    batch = torch.export.Dim("batch")
    with tempfile.TemporaryDirectory(prefix="trustflow-onnx-") as tmp:
        path = Path(tmp) / "network.onnx"
        # The exporter reports its progress on stdout, which belongs to the CLI.
        with _EXPORTING, contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Probabilities().eval(),
                (example,),
                str(path),
                input_names=[NETWORK_INPUT],
                output_names=["value" if regression else "probabilities"],
                dynamic_shapes={"features": {0: batch}},
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        return onnx.load(str(path))


def keras_graph(model: Any, opset: int) -> onnx.ModelProto:
    """A Keras network (softmax out) through Keras' own ONNX exporter: input ``features``
    [batch, inputs] float, output ``probabilities`` [batch, classes]."""
    import numpy as np

    # Keras exports only a model that has been called (its input signature comes from that).
    model(np.zeros((1, model.input_shape[-1]), dtype=np.float32), training=False)
    with tempfile.TemporaryDirectory(prefix="trustflow-onnx-") as tmp:
        path = Path(tmp) / "network.onnx"
        # The tracer warns about Python ints in Keras' shape code; the batch axis stays dynamic.
        with _EXPORTING, contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.export(str(path), format="onnx", verbose=False, opset_version=opset)
        graph = onnx.load(str(path))
    produced = graph.graph.output[0].name
    for node in graph.graph.node:
        node.output[:] = ["probabilities" if name == produced else name for name in node.output]
    graph.graph.output[0].name = "probabilities"
    return graph


def concat_front(columns: list[str], output: str = "pixels") -> onnx.ModelProto:
    """A front graph: float (n, 1) inputs, one per column, concatenated to (n, len(columns))."""
    inputs = [helper.make_tensor_value_info(c, TensorProto.FLOAT, [None, 1]) for c in columns]
    node = helper.make_node("Concat", columns, [output], axis=1)
    out = helper.make_tensor_value_info(output, TensorProto.FLOAT, [None, len(columns)])
    graph = helper.make_graph([node], "columns", inputs, [out])
    # The oldest opset and IR version Concat needs, not onnx's newest: join() takes the newer
    # of front and network, and the result must load in onnxruntime 1.31 (IR <= 13), the
    # newest release with a GPU build.
    opsets = [helper.make_opsetid("", 13)]
    ir_version = helper.find_min_ir_version_for(opsets)
    return helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)


def join(
    front: onnx.ModelProto, front_output: str, network: onnx.ModelProto, regression: bool = False
) -> onnx.ModelProto:
    """``front`` -> (cast to float) -> ``network`` -> outputs ``label`` and ``probabilities``,
    or a regressor's one output ``value``."""
    # One IR version and one opset per domain for the pair (merge_models insists).
    ir_version = max(front.ir_version, network.ir_version)
    opsets: dict[str, int] = {}
    for model in (front, network):
        for entry in model.opset_import:
            opsets[entry.domain] = max(opsets.get(entry.domain, 0), entry.version)
    for model in (front, network):
        model.ir_version = ir_version
        model.ClearField("opset_import")
        model.opset_import.extend(helper.make_opsetid(d, v) for d, v in opsets.items())

    produced = next(o for o in front.graph.output if o.name == front_output)
    if produced.type.tensor_type.elem_type != TensorProto.FLOAT:
        cast = f"{front_output}_float"
        front.graph.node.append(
            helper.make_node("Cast", [front_output], [cast], to=TensorProto.FLOAT)
        )
        front.graph.ClearField("output")
        front.graph.output.append(
            helper.make_tensor_value_info(cast, TensorProto.FLOAT, [None, None])
        )
        front_output = cast
    else:
        kept = [o for o in front.graph.output if o.name == front_output]
        front.graph.ClearField("output")
        front.graph.output.extend(kept)
    # skl2onnx names its graph by a random UUID, and merge_models writes both names into the
    # merged graph: fixed names keep the file a function of the model alone.
    front.graph.name, network.graph.name = "front", "network"
    merged = onnx.compose.merge_models(
        front, network, io_map=[(front_output, NETWORK_INPUT)], prefix2="net_"
    )
    probabilities = merged.graph.output[0].name
    if regression:
        merged.graph.node.append(helper.make_node("Identity", [probabilities], ["value"]))
        merged.graph.ClearField("output")
        merged.graph.output.append(
            helper.make_tensor_value_info("value", TensorProto.FLOAT, [None, 1])
        )
        return merged
    merged.graph.node.append(
        helper.make_node("ArgMax", [probabilities], ["label"], axis=1, keepdims=0)
    )
    merged.graph.node.append(helper.make_node("Identity", [probabilities], ["probabilities"]))
    classes = network.graph.output[0].type.tensor_type.shape.dim[1].dim_value or None
    merged.graph.ClearField("output")
    merged.graph.output.extend(
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, classes]),
        ]
    )
    return merged


def allclose_parity(
    graph: onnx.ModelProto,
    feed: dict[str, Any],
    expected: Any,
    rtol: float,
    atol: float,
) -> dict[str, Any]:
    """Run the graph on ``feed`` and compare its probabilities with ``expected`` (the native
    model's) by ``numpy.allclose``; also the labels."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(["label", "probabilities"], feed)
    expected = np.asarray(expected, dtype=np.float64)
    got = np.asarray(probabilities, dtype=np.float64)
    diff = np.abs(got - expected)
    passed = bool(np.allclose(got, expected, rtol=rtol, atol=atol))
    agreement = float((np.asarray(labels) == expected.argmax(axis=1)).mean())
    return {
        "rows": len(expected),
        "max_abs_diff": float(diff.max()),
        "max_excess": float((diff - atol - rtol * np.abs(expected)).max()),
        "label_agreement": agreement,
        "rtol": rtol,
        "atol": atol,
        "passed": passed,
    }
