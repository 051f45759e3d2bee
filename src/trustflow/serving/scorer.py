"""An ONNX graph, its input signature, and turning request columns into predictions.

Everything here runs per request, so it works on plain lists and NumPy arrays (no pandas): a
one-row request costs tens of microseconds, not the milliseconds a DataFrame would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from trustflow.errors import TrustflowError
from trustflow.export.metadata import METADATA_CLASSES, VALUE_OUTPUT

Device = Literal["auto", "cpu", "cuda"]
NUMBER, TEXT = "number", "string"
ONNX_KINDS = {"tensor(double)": NUMBER, "tensor(float)": NUMBER, "tensor(string)": TEXT}


class PayloadError(ValueError):
    """A request the server refuses: ``status`` is the HTTP status, the message names the field."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ModelLoadError(TrustflowError):
    """A model this server cannot serve (missing, unsupported inputs, no usable device)."""


class ModelRejected(ModelLoadError):
    """A model that exists but may not be deployed (it failed its ONNX parity gate)."""


@dataclass(frozen=True)
class ModelRelease:
    """One servable model: where it came from, which version, and the graph's bytes."""

    name: str
    version: str
    source: str  # models:/NAME/VERSION or a file path
    graph: bytes


def providers_for(device: Device) -> list[str]:
    """onnxruntime execution providers: CUDA when asked for or (``auto``) when present."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise ModelLoadError(
            "--device cuda: onnxruntime has no CUDAExecutionProvider here (install the 'gpu' "
            f"extra, onnxruntime-gpu, on a machine with a GPU); available: {available}"
        )
    if device != "cpu" and has_cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


NoneType = type(None)
NUMBER_TYPES: set[type] = {int, float, NoneType}  # bool is not int here: type(True) is bool


def _reject(name: str, values: list[Any], allowed: set[type], expected: str) -> None:
    row = next(row for row, value in enumerate(values) if type(value) not in allowed)
    raise PayloadError(400, f"column '{name}' row {row}: expected {expected}, got {values[row]!r}")


def _numbers(name: str, values: list[Any], strict: bool) -> list[Any]:
    """A number column with types other than int/float/None: numbers sent as strings are
    converted (as MLflow converts them by the signature) unless ``strict``; anything else (a
    bool, an object, a word) is refused naming its row."""
    allowed = NUMBER_TYPES if strict else NUMBER_TYPES | {str}
    if not set(map(type, values)) <= allowed:
        _reject(name, values, allowed, "a number")
    converted = []
    for row, value in enumerate(values):
        if type(value) is str:
            try:
                value = float(value) if value.strip() else None
            except ValueError:
                raise PayloadError(
                    400, f"column '{name}' row {row}: expected a number, got {value!r}"
                ) from None
        converted.append(value)
    return converted


def _texts(name: str, values: list[Any]) -> list[Any]:
    """A text column with missing cells: None, or NaN as pandas (and MLflow's client) writes a
    missing string. Missing encodes as "", as in the export. Any other non-string is refused."""
    out = []
    for row, value in enumerate(values):
        if value is None or (type(value) is float and value != value):  # NaN != NaN
            value = ""
        elif type(value) is not str:
            raise PayloadError(400, f"column '{name}' row {row}: expected a string, got {value!r}")
        out.append(value)
    return out


def _finite(name: str, values: list[Any], dtype: type[np.floating[Any]]) -> np.ndarray:
    """The column as an (n, 1) array. NaN is a missing number; an infinity (JSON's Infinity,
    1e400, CSV's inf), or a number beyond a float32 input's range, is refused, not scored."""
    column = np.array(values, dtype=np.float64)
    infinite = np.isinf(column)
    if not infinite.any() and dtype is not np.float64:
        with np.errstate(over="ignore"):  # an overflow is found, and named, just below
            column = column.astype(dtype)
        infinite = np.isinf(column)
        expected = f"a number within {np.dtype(dtype).name} range"
    else:
        expected = "a finite number"
    if infinite.any():
        row = int(np.flatnonzero(infinite)[0])
        raise PayloadError(
            400, f"column '{name}' row {row}: expected {expected}, got {values[row]!r}"
        )
    return column.reshape(-1, 1)


@dataclass(frozen=True)
class Prediction:
    labels: np.ndarray  # class indices; a regressor's values
    probabilities: np.ndarray  # one column per class; a regressor's: no columns
    dropped: list[str]  # request columns the model does not take, left out


class Signature:
    """A graph's inputs as the server takes them: one (n, 1) input per column, numbers (double
    or float) or strings; and turning request columns into the session's feed."""

    def __init__(self, session: Any, source: str) -> None:
        self.columns: dict[str, str] = {}
        self.float_inputs: set[str] = set()
        for node in session.get_inputs():
            kind = ONNX_KINDS.get(node.type)
            if kind is None or len(node.shape) != 2 or node.shape[1] != 1:
                raise ModelLoadError(
                    f"{source}: input '{node.name}' is {node.type} {node.shape}; the "
                    "server serves one (n, 1) number or string input per column"
                )
            self.columns[node.name] = kind
            if node.type == "tensor(float)":
                self.float_inputs.add(node.name)
        # CSV cells are text until the signature says a column holds numbers.
        self.numeric = {name for name, kind in self.columns.items() if kind == NUMBER}

    def feed(
        self, columns: dict[str, list[Any]], rows: int, strict: bool = False
    ) -> tuple[dict[str, np.ndarray], list[str]]:
        """Check ``columns`` against the signature and build the session's inputs; also the
        columns the model does not take, which are dropped (as MLflow drops them) unless
        ``strict``."""
        dropped = [name for name in columns if name not in self.columns]
        if dropped and strict:
            raise PayloadError(
                400, f"unknown column '{dropped[0]}'; the model takes: {', '.join(self.columns)}"
            )
        feed: dict[str, np.ndarray] = {}
        for name, kind in self.columns.items():
            values = columns.get(name)
            if values is None:
                raise PayloadError(400, f"missing column '{name}'")
            if len(values) != rows:
                raise PayloadError(400, f"column '{name}' has {len(values)} values, not {rows}")
            # The type checks run as one C-level pass over the column (set(map(type, ...)));
            # only a column that fails it is walked again, to convert or to name the row.
            types = set(map(type, values))
            if kind == NUMBER:
                if not types <= NUMBER_TYPES:
                    values = _numbers(name, values, strict)
                dtype = np.float32 if name in self.float_inputs else np.float64
                feed[name] = _finite(name, values, dtype)
            else:
                if not types <= {str}:
                    values = _texts(name, values)
                feed[name] = np.array(values, dtype=object).reshape(rows, 1)
        return feed, dropped


class Scorer:
    """An onnxruntime session over one release, with the signature its requests are checked
    against: one (n, 1) input per column, numbers (double) or strings."""

    def __init__(self, release: ModelRelease, device: Device = "auto", threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        # One thread per session: small requests lose more to thread hand-offs than they gain;
        # scale out with --workers instead.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        providers = providers_for(device)  # its ModelLoadError names the device problem
        try:
            self.session = ort.InferenceSession(release.graph, options, providers=providers)
        except Exception as exc:
            raise ModelLoadError(f"{release.source}: not a loadable ONNX model ({exc})") from exc
        self.release = release
        self.providers: list[str] = self.session.get_providers()
        self.signature = Signature(self.session, release.source)
        self.columns = self.signature.columns
        self.numeric = self.signature.numeric
        outputs = [node.name for node in self.session.get_outputs()]
        # A regressor's graph has one output, its value; a classifier's, labels and probabilities.
        self.regression = outputs == [VALUE_OUTPUT]
        if len(outputs) < 2 and not self.regression:
            raise ModelLoadError(
                f"{release.source}: expected label and probability outputs, or one "
                f"'{VALUE_OUTPUT}' output"
            )
        self.outputs = outputs[:2]
        classes = self.session.get_modelmeta().custom_metadata_map.get(METADATA_CLASSES)
        self.classes: list[str] | None = json.loads(classes) if classes else None
        self.linear: Any = None  # trustflow.crypto.linear.LinearSplit when serving encrypted

    def feed(
        self, columns: dict[str, list[Any]], rows: int, strict: bool = False
    ) -> tuple[dict[str, np.ndarray], list[str]]:
        return self.signature.feed(columns, rows, strict)

    def predict(self, columns: dict[str, list[Any]], rows: int, strict: bool = False) -> Prediction:
        feed, dropped = self.feed(columns, rows, strict)
        if self.regression:
            (values,) = self.session.run(self.outputs, feed)
            flat = np.asarray(values, dtype=np.float64).reshape(-1)
            return Prediction(flat, np.empty((len(flat), 0)), dropped)
        labels, probabilities = self.session.run(self.outputs, feed)
        return Prediction(np.asarray(labels).reshape(-1), np.asarray(probabilities), dropped)

    def class_names(self, labels: np.ndarray) -> list[str]:
        names = self.classes
        if names is None:
            return [str(label) for label in labels.tolist()]
        return [names[label] for label in labels.tolist()]
