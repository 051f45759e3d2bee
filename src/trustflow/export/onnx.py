"""scikit-learn pipeline (preprocessing + model) -> ONNX, and the parity check between the two.

The graph has one input per feature column, named like the column: numbers as double, categories
as strings (a missing category is sent as "" and, like any unknown value, encodes as all zeros).
Outputs: ``label`` (int64) and ``probabilities`` (one column per class). The graph's metadata
names the data set, the target column and the class labels.

Two fixes to skl2onnx 1.20, registered as converters (nothing of skl2onnx is patched):

- HistGradientBoostingClassifier failed to convert ("AttributeProto.ints: Expected an int, got a
  boolean"): the converter writes the leaves' ``nodes_missing_value_tracks_true`` as Python
  ``False``. Our converter passes the same attributes on as integers.
- Preprocessing runs in double so scaled features equal scikit-learn's bit for bit; the trees then
  take a float32 cast of them, which is what skl2onnx's float thresholds are adjusted for (fed in
  float32, the scaling itself drifts and rows near a split change branch: 4.7e-3 on Adult). The
  double median imputation uses ``Where(IsNaN)``, as onnxruntime's ML ``Imputer`` has no double
  kernel.
"""

from __future__ import annotations

import json
import time
from functools import cache
from typing import Any

import numpy as np
import onnx
import pandas as pd
from pydantic import BaseModel, ConfigDict
from sklearn.pipeline import Pipeline

from trustflow.config import DatasetSchema, OnnxConfig
from trustflow.export.metadata import (
    METADATA_CLASSES,
    METADATA_DATASET,
    METADATA_TARGET,
    VALUE_OUTPUT,
)
from trustflow.models.kinds import OnnxConverter

ML_OPSET = 3  # ai.onnx.ml


class _IntegerFlags:
    """A converter container that hands ``nodes_missing_value_tracks_true`` to ONNX as ints."""

    def __init__(self, container: Any) -> None:
        self._container = container

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def add_node(self, *args: Any, **attrs: Any) -> Any:
        flags = attrs.get("nodes_missing_value_tracks_true")
        if flags is not None:
            attrs["nodes_missing_value_tracks_true"] = [int(flag) for flag in flags]
        return self._container.add_node(*args, **attrs)


class _Float32Trees:
    """A converter container for scikit-learn's decision trees, which compare float32 features
    with float64 thresholds: the node is fed the features cast to float32, and each threshold
    becomes the largest float32 at or below it, so ``x <= t`` decides every float32 ``x``
    exactly as scikit-learn does (rounding thresholds to nearest flips the values between)."""

    def __init__(self, container: Any, scope: Any) -> None:
        self._container, self._scope = container, scope

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def add_node(self, op_type: str, inputs: Any, outputs: Any, **attrs: Any) -> Any:
        thresholds = attrs.get("nodes_values")
        if op_type.startswith("TreeEnsemble") and thresholds is not None:
            exact = np.asarray(thresholds, dtype=np.float64)
            below = exact.astype(np.float32)
            below = np.where(below > exact, np.nextafter(below, np.float32(-np.inf)), below)
            attrs["nodes_values"] = below.astype(np.float32)
            cast = self._scope.get_unique_variable_name("features_float32")
            self._container.add_node("Cast", inputs, [cast], to=onnx.TensorProto.FLOAT)
            inputs = [cast]
        return self._container.add_node(op_type, inputs, outputs, **attrs)


class _DoubleTrees:
    """A converter container for HistGradientBoosting, which compares float64 features with
    float64 thresholds: the ensemble gets the double features and its thresholds as a double
    tensor (``nodes_values_as_tensor``, ai.onnx.ml 3). In float32 a test value one double ulp
    above a threshold (a training value, rescaled) compares equal to it and takes the other
    branch: 5 of 89 diabetes test rows did."""

    def __init__(self, container: Any) -> None:
        self._container = container

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def add_node(self, op_type: str, inputs: Any, outputs: Any, **attrs: Any) -> Any:
        thresholds = attrs.pop("nodes_values", None)
        if op_type.startswith("TreeEnsemble") and thresholds is not None:
            attrs["nodes_values_as_tensor"] = onnx.numpy_helper.from_array(
                np.asarray(thresholds, dtype=np.float64), name="nodes_values"
            )
        elif thresholds is not None:
            attrs["nodes_values"] = thresholds
        return self._container.add_node(op_type, inputs, outputs, **attrs)


class _WithInput:
    """An operator seen through a different input variable."""

    def __init__(self, operator: Any, variable: Any) -> None:
        self._operator = operator
        self.inputs = [variable]
        self.input_full_names = [variable.full_name]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._operator, name)


@cache
def _register_converters() -> None:
    from skl2onnx import update_registered_converter
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from skl2onnx.operator_converters.imputer_op import convert_sklearn_imputer
    from skl2onnx.operator_converters.random_forest import (
        convert_sklearn_random_forest_classifier,
        convert_sklearn_random_forest_regressor_converter,
    )
    from skl2onnx.shape_calculators.imputer import calculate_sklearn_imputer_output_shapes
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.impute import SimpleImputer

    def boosting_shapes(operator: Any) -> None:
        calculate_linear_classifier_output_shapes(operator)
        scores = operator.outputs[1]
        scores.type = FloatTensorType(scores.type.shape)  # the tree ensemble emits float

    def float_input(scope: Any, operator: Any, container: Any) -> Any:
        source = operator.inputs[0]
        if not isinstance(source.type, DoubleTensorType):
            return operator
        cast = scope.declare_local_variable("features_float", FloatTensorType(source.type.shape))
        container.add_node("Cast", [source.full_name], [cast.full_name], to=onnx.TensorProto.FLOAT)
        return _WithInput(operator, cast)

    def convert_boosting(scope: Any, operator: Any, container: Any) -> None:
        operator = float_input(scope, operator, container)
        convert_sklearn_random_forest_classifier(scope, operator, _IntegerFlags(container))

    def regressor_shapes(operator: Any) -> None:
        calculate_linear_regressor_output_shapes(operator)
        value = operator.outputs[0]
        value.type = FloatTensorType(value.type.shape)  # TreeEnsembleRegressor emits float

    def convert_boosting_regressor(scope: Any, operator: Any, container: Any) -> None:
        convert_sklearn_random_forest_regressor_converter(
            scope, operator, _IntegerFlags(_DoubleTrees(container)), op_version=ML_OPSET
        )

    def convert_forest_regressor(scope: Any, operator: Any, container: Any) -> None:
        convert_sklearn_random_forest_regressor_converter(
            scope, operator, _Float32Trees(container, scope), op_version=ML_OPSET
        )

    def convert_imputer(scope: Any, operator: Any, container: Any) -> None:
        if not isinstance(operator.inputs[0].type, DoubleTensorType):
            convert_sklearn_imputer(scope, operator, container)
            return
        features = operator.inputs[0].full_name
        if len(operator.inputs) > 1:
            features = scope.get_unique_variable_name("imputer_in")
            container.add_node("Concat", list(operator.input_full_names), [features], axis=1)
        statistics = operator.raw_operator.statistics_.astype(np.float64)
        fill = scope.get_unique_variable_name("statistics")
        container.add_initializer(
            fill, onnx.TensorProto.DOUBLE, [1, statistics.size], statistics.tolist()
        )
        missing = scope.get_unique_variable_name("missing")
        container.add_node("IsNaN", [features], [missing])
        container.add_node("Where", [missing, fill, features], [operator.outputs[0].full_name])

    update_registered_converter(
        HistGradientBoostingClassifier,
        "SklearnHistGradientBoostingClassifier",
        boosting_shapes,
        convert_boosting,
        options={
            "zipmap": [True, False, "columns"],
            "nocl": [True, False],
            "raw_scores": [True, False],
        },
    )
    update_registered_converter(
        HistGradientBoostingRegressor,
        "SklearnHistGradientBoostingRegressor",
        regressor_shapes,
        convert_boosting_regressor,
    )
    update_registered_converter(
        RandomForestRegressor,
        "SklearnRandomForestRegressor",
        regressor_shapes,
        convert_forest_regressor,
        options={"decision_path": [True, False], "decision_leaf": [True, False]},
    )
    update_registered_converter(
        SimpleImputer, "SklearnImputer", calculate_sklearn_imputer_output_shapes, convert_imputer
    )

    def convert_forest(scope: Any, operator: Any, container: Any) -> None:
        # With op_version 3 skl2onnx hands over the thresholds in float64 (from a double
        # input), which _Float32Trees rounds the way scikit-learn compares.
        convert_sklearn_random_forest_classifier(
            scope, operator, _Float32Trees(container, scope), op_version=ML_OPSET
        )

    update_registered_converter(
        RandomForestClassifier,
        "SklearnRandomForestClassifier",
        calculate_linear_classifier_output_shapes,
        convert_forest,
        options={"zipmap": [True, False, "columns"], "nocl": [True, False],
                 "raw_scores": [True, False], "decision_path": [True, False],
                 "decision_leaf": [True, False]},
    )  # fmt: skip


class NotExportable(Exception):
    """A model with no ONNX form; its message says why (it cannot be deployed)."""


def convert_pipeline(
    model: Pipeline, schema: DatasetSchema, cfg: OnnxConfig, converter: OnnxConverter | None
) -> onnx.ModelProto:
    """Convert the whole fitted pipeline with its kind's converter (``ModelKind.onnx``) and
    validate the graph with ``onnx.checker``. A kind with no converter is NotExportable."""
    if converter is None:
        reason = getattr(model, "onnx_unsupported_reason", None)
        raise NotExportable(reason or "this kind of model has no ONNX converter")
    if converter == "ebm2onnx":
        graph = _convert_ebm(model, schema)
    elif converter == "network":
        graph = _convert_neural(model, schema, cfg)
    else:
        graph = _convert_sklearn(model, schema, cfg)
    if not schema.classification:
        _name_the_value(graph)
    # What a server needs beyond the graph: the label names behind the 0, 1, ... output (a
    # regressor has none).
    metadata = {METADATA_DATASET: schema.name, METADATA_TARGET: schema.target.column}
    if schema.classification:
        metadata[METADATA_CLASSES] = json.dumps(list(schema.target_labels))
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=value)
    # Converters name the graph with a random UUID; a fixed name keeps the file a function of
    # the model alone, so its hash can name it.
    graph.graph.name = f"trustflow-{schema.name}"
    onnx.checker.check_model(graph, full_check=True)
    return graph


def _name_the_value(graph: onnx.ModelProto) -> None:
    """A regressor's graph ends in one output, named ``value`` whatever its converter called
    it, with shape [batch, 1]."""
    (output,) = graph.graph.output
    for node in graph.graph.node:
        node.output[:] = [VALUE_OUTPUT if name == output.name else name for name in node.output]
    output.name = VALUE_OUTPUT


def _convert_sklearn(model: Any, schema: DatasetSchema, cfg: OnnxConfig) -> onnx.ModelProto:
    """A fitted pipeline (or the preprocessor alone) with one (n, 1) input per column."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType

    _register_converters()
    inputs = [
        (
            name,
            DoubleTensorType([None, 1])
            if name in schema.numeric_features
            else StringTensorType([None, 1]),
        )
        for name in schema.feature_columns
    ]
    graph: onnx.ModelProto = convert_sklearn(
        model,
        initial_types=inputs,
        target_opset={"": cfg.opset, "ai.onnx.ml": ML_OPSET},
        options={id(model): {"zipmap": False}}
        if isinstance(model, Pipeline) and schema.classification
        else None,
    )
    return graph


def _convert_neural(model: Pipeline, schema: DatasetSchema, cfg: OnnxConfig) -> onnx.ModelProto:
    """The shared preprocessor (skl2onnx) joined to the network (torch.onnx.export for a
    Lightning network, Keras' own exporter for a Keras one)."""
    from trustflow.export.neural import join, keras_graph, network_graph
    from trustflow.models.keras_net import KerasClassifier

    if len(model.steps) != 2:
        raise NotExportable("a network converts to ONNX behind the shared preprocessor only")
    front = _convert_sklearn(model.steps[0][1], schema, cfg)
    network = model.steps[-1][1]
    regression = not schema.classification
    if isinstance(network, KerasClassifier):
        body = keras_graph(network.network(), cfg.opset)
    else:
        body = network_graph(network.network(), network.spec_["inputs"], cfg.opset, regression)
    return join(front, front.graph.output[0].name, body, regression)


def _convert_ebm(model: Pipeline, schema: DatasetSchema) -> onnx.ModelProto:
    """An EBM through ebm2onnx (it builds its own graph and opsets), with its one-dimensional
    inputs wrapped into the (n, 1) per-column inputs every trustflow graph has."""
    import ebm2onnx
    from onnx import helper, numpy_helper

    if len(model.steps) != 1:
        raise NotExportable("an EBM converts to ONNX only on the raw features (no preprocessing)")
    ebm = model.steps[-1][1]
    if not schema.classification and any(len(term) > 1 for term in ebm.term_features_):
        raise NotExportable(
            "ebm2onnx cannot convert a regression EBM with pair terms (it reads classes_); "
            "set params.interactions: 0"
        )
    numeric = set(schema.numeric_features)
    dtypes = {name: "double" if name in numeric else "str" for name in schema.feature_columns}
    graph: onnx.ModelProto = ebm2onnx.to_onnx(
        ebm,
        dtype=dtypes,
        predict_proba=schema.classification,
        prediction_name="label" if schema.classification else VALUE_OUTPUT,
        probabilities_name="probabilities",
    )
    body = graph.graph
    if not schema.classification:  # its per-term scores output is not part of our contract
        kept = [output for output in body.output if output.name == VALUE_OUTPUT]
        body.ClearField("output")
        body.output.extend(kept)
    flat_shape = "trustflow_flat_shape"
    body.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), flat_shape))
    reshapes, inputs = [], []
    for node_input in body.input:
        flat = f"{node_input.name}_flat"
        for node in body.node:
            node.input[:] = [flat if name == node_input.name else name for name in node.input]
        reshapes.append(helper.make_node("Reshape", [node_input.name, flat_shape], [flat]))
        element = node_input.type.tensor_type.elem_type
        inputs.append(helper.make_tensor_value_info(node_input.name, element, [None, 1]))
    nodes = reshapes + list(body.node)
    body.ClearField("node")
    body.node.extend(nodes)
    body.ClearField("input")
    body.input.extend(inputs)
    return graph


def to_feed(frame: pd.DataFrame, schema: DatasetSchema) -> dict[str, np.ndarray]:
    """Records as ONNX inputs: one (n, 1) array per feature column. Plain NumPy per column: this
    runs per request when serving, where pandas' per-call overhead would dominate."""
    feed: dict[str, np.ndarray] = {}
    numeric = set(schema.numeric_features)
    for name in schema.feature_columns:
        values = frame[name].to_numpy()
        if name in numeric:
            feed[name] = pd.to_numeric(values, errors="coerce").astype(np.float64).reshape(-1, 1)
        else:
            text = values.astype(object)  # a copy: the frame is never modified
            text[pd.isna(text)] = ""
            feed[name] = text.astype(str).astype(object).reshape(-1, 1)
    return feed


class ParityReport(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: int
    max_abs_diff: float
    label_agreement: float
    max_abs_diff_limit: float
    min_label_agreement: float
    # A regressor's values: each may differ by max_abs_diff_limit + value_rtol * |value|, and
    # label_agreement is the share that do not differ more.
    value_rtol: float | None = None
    passed: bool

    def reason(self) -> str:
        if self.value_rtol is not None:
            within = (
                f"{self.label_agreement:.4%} of values within {self.max_abs_diff_limit:.3g} + "
                f"{self.value_rtol:.3g}·|value| (max |diff| {self.max_abs_diff:.3g})"
            )
            if self.passed:
                return f"ONNX parity passed ({within})"
            return (
                f"ONNX parity failed: {within}; onnx.min_label_agreement = "
                f"{self.min_label_agreement:.4%}"
            )
        if self.max_abs_diff > self.max_abs_diff_limit:
            return (
                f"ONNX parity failed: max |p_native - p_onnx| = {self.max_abs_diff:.3g} exceeds "
                f"onnx.max_abs_diff = {self.max_abs_diff_limit:.3g}"
            )
        if self.label_agreement < self.min_label_agreement:
            return (
                f"ONNX parity failed: label agreement {self.label_agreement:.4%} is below "
                f"onnx.min_label_agreement = {self.min_label_agreement:.4%}"
            )
        return (
            f"ONNX parity passed (max |diff| {self.max_abs_diff:.3g}, "
            f"labels {self.label_agreement:.4%})"
        )


class OnnxReport(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    opset: int
    size_bytes: int
    latency_us_single_row: float
    parity: ParityReport


def _default_opset(graph_bytes: bytes) -> int:
    imports = onnx.load_from_string(graph_bytes).opset_import
    return next(int(entry.version) for entry in imports if entry.domain in ("", "ai.onnx"))


def inference_session(graph_bytes: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; its warnings are about graph optimisation
    return ort.InferenceSession(graph_bytes, options, providers=["CPUExecutionProvider"])


def check_parity(
    model: Pipeline, graph_bytes: bytes, frame: pd.DataFrame, schema: DatasetSchema, cfg: OnnxConfig
) -> OnnxReport:
    """Score ``frame`` with both forms and time single-row ONNX inference (median of 200)."""
    session = inference_session(graph_bytes)
    features = frame[schema.feature_columns]
    feed = to_feed(features, schema)
    rtol = None
    if schema.classification:
        labels, probabilities = session.run(None, feed)
        native = model.predict_proba(features)
        diff = float(np.abs(np.asarray(probabilities, dtype=np.float64) - native).max())
        agreement = float((np.asarray(labels).ravel() == model.predict(features)).mean())
    else:  # values: each within max_abs_diff + value_rtol * |value| of the native one
        (values,) = session.run(None, feed)
        native = np.asarray(model.predict(features), dtype=np.float64).reshape(-1)
        gaps = np.abs(np.asarray(values, dtype=np.float64).reshape(-1) - native)
        rtol = cfg.value_rtol
        diff = float(gaps.max())
        agreement = float((gaps <= cfg.max_abs_diff + rtol * np.abs(native)).mean())
    one_row = {name: values[:1] for name, values in feed.items()}
    timings = []
    for _ in range(200):
        started = time.perf_counter()
        session.run(None, one_row)
        timings.append(time.perf_counter() - started)
    parity = ParityReport(
        rows=len(frame),
        max_abs_diff=diff,
        label_agreement=agreement,
        max_abs_diff_limit=cfg.max_abs_diff,
        min_label_agreement=cfg.min_label_agreement,
        value_rtol=rtol,
        passed=agreement >= cfg.min_label_agreement
        and (rtol is not None or diff <= cfg.max_abs_diff),
    )
    return OnnxReport(
        opset=_default_opset(graph_bytes),
        size_bytes=len(graph_bytes),
        latency_us_single_row=float(np.median(timings) * 1e6),
        parity=parity,
    )
