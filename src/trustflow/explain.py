"""Global explanations with InterpretML.

- A glass-box EBM explains itself: its term importances (mean absolute contribution to the
  log-odds over the training rows), per feature and per interaction pair.
- Any other model (the champion, whatever it is) gets a model-agnostic explanation: Morris
  sensitivity analysis (``interpret.blackbox.MorrisSensitivity``), which perturbs one feature at a
  time over a sample of test rows and measures how far the predicted probability moves (mu*).

InterpretML's black-box explainers only take numbers, so categorical features are handed to them
as category codes (the public schema's order) and turned back into the category before the model
sees them: a perturbed code is rounded to the nearest category. Importances of categorical
features therefore depend on that (arbitrary) order more than numeric ones do; the report says so.
"""

from __future__ import annotations

import warnings
from html import escape
from typing import Any, Literal

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict

from trustflow.config import CategoricalColumn, DatasetSchema

Method = Literal[
    "ebm_term_importance",
    "morris_sensitivity",
    "morris_sensitivity_classes",
    "morris_sensitivity_value",
]
METHOD_NOTES: dict[str, str] = {
    "ebm_term_importance": "EBM term importance: mean |contribution to the log-odds| "
    "over the training rows (InterpretML ExplainableBoostingClassifier.explain_global)",
    "morris_sensitivity": "Morris sensitivity (mu*): mean |change in P(positive)| when one "
    "feature is perturbed, over sampled test rows (InterpretML MorrisSensitivity); categorical "
    "features are perturbed through their category codes",
    "morris_sensitivity_classes": "Morris sensitivity (mu*) of each class's probability, "
    "averaged over the classes: mean |change in P(class)| when one feature is perturbed, over "
    "sampled test rows (InterpretML MorrisSensitivity, which takes one output at a time); "
    "categorical features are perturbed through their category codes",
    "morris_sensitivity_value": "Morris sensitivity (mu*): mean |change in the predicted value| "
    "when one feature is perturbed, over sampled test rows (InterpretML MorrisSensitivity); "
    "categorical features are perturbed through their category codes",
}


class Importance(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    feature: str
    score: float


class GlobalExplanation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    method: Method
    rows: int  # rows the explanation was computed on
    importances: list[Importance]  # highest first

    def top(self, n: int) -> list[Importance]:
        return self.importances[:n]


def _ranked(names: list[Any], scores: list[Any]) -> list[Importance]:
    pairs = [Importance(feature=str(n), score=float(s)) for n, s in zip(names, scores, strict=True)]
    return sorted(pairs, key=lambda item: item.score, reverse=True)


def explain_glassbox(model: Any, name: str, rows: int) -> tuple[GlobalExplanation, str]:
    """The EBM's own global explanation, and InterpretML's interactive view of it as HTML."""
    ebm = model.steps[-1][1] if hasattr(model, "steps") else model
    with warnings.catch_warnings():
        # A multiclass EBM's pair terms cannot be shown by InterpretML: its explanation lists
        # the single features only.
        warnings.filterwarnings("ignore", "Dropping term .* multinomial interactions")
        explanation = ebm.explain_global(name=name)
    data = explanation.data()
    result = GlobalExplanation(
        model=name,
        method="ebm_term_importance",
        rows=rows,
        importances=_ranked(list(data["names"]), list(data["scores"])),
    )
    return result, _html(explanation)


class _CodedModel:
    """The model seen through numeric features: categorical codes become categories again."""

    def __init__(self, model: Any, schema: DatasetSchema) -> None:
        self.model = model
        self.columns = schema.feature_columns
        self.categories = {
            name: np.asarray(spec.categories, dtype=object)
            for name in self.columns
            if isinstance(spec := schema.columns[name], CategoricalColumn)
        }

    def encode(self, frame: pd.DataFrame) -> pd.DataFrame:
        coded = frame[self.columns].copy()
        for name, categories in self.categories.items():
            codes = pd.Categorical(frame[name], categories=list(categories)).codes
            coded[name] = codes.astype(np.float64)  # -1 (missing) is clipped on the way back
        return coded.astype(np.float64)

    def decode(self, values: np.ndarray) -> pd.DataFrame:
        frame = pd.DataFrame(np.asarray(values, dtype=np.float64), columns=self.columns)
        decoded: dict[str, Any] = {}
        for name, categories in self.categories.items():
            codes = np.clip(np.rint(frame[name].to_numpy()), 0, len(categories) - 1).astype(int)
            decoded[name] = categories[codes]
        return frame.assign(**decoded)

    def predict_proba(self, values: np.ndarray) -> np.ndarray:
        proba: np.ndarray = self.model.predict_proba(self.decode(values))
        return proba

    def predict(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(self.decode(values)), dtype=np.float64)


def explain_black_box(
    model: Any, name: str, frame: pd.DataFrame, schema: DatasetSchema, rows: int, seed: int
) -> tuple[GlobalExplanation, str]:
    """Morris sensitivity of ``model`` over ``rows`` sampled rows of ``frame``."""
    from interpret.blackbox import MorrisSensitivity

    coded = _CodedModel(model, schema)
    sample = frame.sample(n=min(rows, len(frame)), random_state=seed)
    data = coded.encode(sample)
    classes = len(schema.target_labels)
    if classes <= 2:  # binary: P(positive); regression (no classes): the value
        method: Method = "morris_sensitivity" if classes else "morris_sensitivity_value"
        explanation = MorrisSensitivity(
            coded.predict_proba if classes else coded.predict, data, feature_names=coded.columns
        ).explain_global(name=name)
        result = GlobalExplanation(
            model=name,
            method=method,
            rows=len(sample),
            importances=_ranked(
                list(explanation.data()["names"]), list(explanation.data()["scores"])
            ),
        )
        return result, _html(explanation)
    # InterpretML's Morris takes a binary classifier or one output: each class's probability in
    # turn, averaged.
    per_class = [
        MorrisSensitivity(
            lambda values, code=code: coded.predict_proba(values)[:, code],
            data,
            feature_names=coded.columns,
        ).explain_global(name=f"{name}: P({label})")
        for code, label in enumerate(schema.target_labels)
    ]
    names = list(per_class[0].data()["names"])
    scores = np.mean([np.asarray(e.data()["scores"], dtype=np.float64) for e in per_class], axis=0)
    result = GlobalExplanation(
        model=name,
        method="morris_sensitivity_classes",
        rows=len(sample),
        importances=_ranked(names, list(scores)),
    )
    sections = [
        f"<h2>{escape(explanation.name)}</h2>"
        + explanation.visualize().to_html(include_plotlyjs="cdn", full_html=False)
        for explanation in per_class
    ]
    return result, "<!DOCTYPE html><html><body>" + "".join(sections) + "</body></html>"


def _html(explanation: Any) -> str:
    """InterpretML's plotly view as a standalone page (plotly.js from its CDN when viewed)."""
    figure = explanation.visualize()
    html: str = figure.to_html(include_plotlyjs="cdn", full_html=True)
    return html


def importance_figure(explanation: GlobalExplanation, top: int = 15) -> Figure:
    shown = explanation.top(top)
    fig = Figure(figsize=(6.5, 1.2 + 0.3 * len(shown)), dpi=100)
    ax = fig.add_subplot()
    ax.barh(range(len(shown)), [item.score for item in shown], color="C0")
    ax.set_yticks(range(len(shown)), labels=[item.feature for item in shown])
    ax.invert_yaxis()
    label = {
        "ebm_term_importance": "mean |score|",
        "morris_sensitivity": "mu*",
        "morris_sensitivity_classes": "mean mu* over the classes",
        "morris_sensitivity_value": "mu*",
    }[explanation.method]
    ax.set(xlabel=label, title=f"Global explanation: {explanation.model}")
    ax.grid(axis="x", linewidth=0.3)
    fig.tight_layout()
    return fig
