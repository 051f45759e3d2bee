"""The pipelines, each declared once: what the CLI runs (`trustflow run NAME`), what
`trustflow pipelines` lists, what prefect.yaml deploys and the docs describe.

Declarations stay light: the config model is pydantic, and the flow, its runner and its
display are named by import path and loaded on use (Prefect reads its settings when imported,
which the CLI sets first). Adding a pipeline is its own files (flow, tasks, config model and
YAML) plus one entry here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from trustflow.config import DigitsConfig, TabularConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _resolve(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Pipeline:
    name: str  # `trustflow run NAME`
    summary: str  # one line for `trustflow pipelines`
    flow_name: str  # the Prefect flow, its deployment and its MLflow experiment
    config: type[BaseModel]  # the typed config; its defaults are configs/<name>.yaml
    entrypoint: str  # file:function of the flow, as prefect.yaml names it
    runner: str  # module:function (config, Workspace) -> the flow run's final State
    display: str  # module:function (summary as JSON) -> None, the people's view

    @property
    def config_file(self) -> Path:
        return CONFIGS / f"{self.name}.yaml"

    @property
    def defaults(self) -> Any:
        return self.config()

    @property
    def experiment(self) -> str:
        return str(self.defaults.tracking.experiment)

    @property
    def model_name(self) -> str:
        return str(self.defaults.registry.model_name)

    def flow(self) -> Any:
        file, _, function = self.entrypoint.partition(":")
        return _resolve(f"{file.removesuffix('.py').replace('/', '.')}:{function}")

    def run(self, config: BaseModel, workspace: Any) -> Any:
        return _resolve(self.runner)(config, workspace)

    def show(self, summary: dict[str, Any]) -> None:
        _resolve(self.display)(summary)


PIPELINES: dict[str, Pipeline] = {
    pipeline.name: pipeline
    for pipeline in (
        Pipeline(
            "tabular",
            "candidates on a versioned table, fairness and parity gates, the best promoted",
            "train-tabular",
            TabularConfig,
            "flows/tabular.py:train_tabular",
            "flows.tabular:run_pipeline",
            "flows.progress:show_tabular",
        ),
        Pipeline(
            "digits",
            "a CNN on scikit-learn's bundled 8x8 digits, ONNX allclose parity, promoted",
            "train-digits",
            DigitsConfig,
            "flows/digits.py:train_digits",
            "flows.digits:run_digits",
            "flows.progress:show_digits",
        ),
    )
}
