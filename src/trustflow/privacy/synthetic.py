"""A differentially private synthetic copy of the training split (``privacy.mode: synthetic``):
SmartNoise's MST synthesizer, run in its own environment (``mst_worker.py``, ``make synth``),
and the comparison of the copy with the real rows.

Every candidate then trains on the copy, so each model is post-processing of one (ε, δ)-DP
release. The domain (categories, numeric bounds and bins) comes from the schema, never from the
rows. MST treats the number of rows as public (bounded DP, as Private-PGM does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from trustflow.config import CategoricalColumn, DatasetSchema, SyntheticConfig
from trustflow.errors import ConfigError, SynthesizerError

WORKER = Path(__file__).with_name("mst_worker.py")
PYTHON_ENV = "TRUSTFLOW_SYNTH_PYTHON"


class SyntheticRelease(BaseModel):
    """What the ledger records of a synthetic copy: how it was made, and the file it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    synthesizer: str  # "MST (smartnoise-synth)"
    epsilon: float
    delta: float
    bins: int
    rows: int  # sampled: as many as the training split (public under bounded DP)
    seconds: float  # the synthesizer's fit and sample
    file: str  # the copy, kept in the workspace for reuse
    md5: str


def synth_python(cfg: SyntheticConfig) -> Path:
    """The synthesizer environment's interpreter: ``privacy.synthetic.python``, else
    ``$TRUSTFLOW_SYNTH_PYTHON``, else ``.venv-synth`` next to this environment (``make synth``).
    Missing: one line saying how to make it."""
    given = cfg.python or os.environ.get(PYTHON_ENV)
    python = Path(given) if given else Path(sys.prefix).parent / ".venv-synth" / "bin" / "python"
    if not python.exists():
        raise ConfigError(
            f"privacy.mode: synthetic runs SmartNoise in its own environment, and {python} does "
            f"not exist: run `make synth`, or set privacy.synthetic.python (or ${PYTHON_ENV})"
        )
    return python


def worker_columns(schema: DatasetSchema, bins: int) -> list[dict[str, Any]]:
    """Every column of the schema, with its public domain, for the worker's request."""
    columns: list[dict[str, Any]] = []
    for name, column in schema.columns.items():
        if isinstance(column, CategoricalColumn):
            columns.append({"name": name, "kind": "categorical", "categories": column.categories})
        else:
            if column.bounds is None or not column.public:
                raise ConfigError(
                    f"privacy.mode: synthetic bins numeric column '{name}' on public bounds, "
                    f"and data set '{schema.name}' declares none it may use (bounds "
                    f"{column.bounds}, public {column.public})"
                )
            low, high = column.bounds
            columns.append(
                {"name": name, "kind": "numeric", "lower": low, "upper": high, "bins": bins}
            )
    return columns


def synthesize(
    train: Path, schema: DatasetSchema, cfg: SyntheticConfig, rows: int, out: Path
) -> dict[str, Any]:
    """Run the synthesizer on ``train`` in its environment, writing ``rows`` synthetic rows to
    ``out``; the worker's answer (rows, seconds). Its failure, or running past
    ``cfg.max_seconds``, is one line."""
    if not 0 < cfg.delta < 1 / rows:
        raise ConfigError(
            f"privacy.synthetic.delta = {cfg.delta:g} must be below 1/n = {1 / rows:.3g} for "
            f"n = {rows:,} training rows"
        )
    python = synth_python(cfg)
    request = {
        "synthesizer": cfg.synthesizer,
        "input": str(train),
        "output": str(out),
        "epsilon": cfg.epsilon,
        "delta": cfg.delta,
        "rows": rows,
        "columns": worker_columns(schema, cfg.bins),
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(request, handle)
    name = cfg.synthesizer.upper()
    try:
        done = subprocess.run(
            [str(python), str(WORKER), handle.name],
            capture_output=True,
            text=True,
            check=False,
            timeout=cfg.max_seconds,
            env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONWARNINGS": "ignore"},
        )
    except subprocess.TimeoutExpired:
        out.unlink(missing_ok=True)
        raise SynthesizerError(
            f"the {name} synthesizer did not finish within privacy.synthetic.max_seconds = "
            f"{cfg.max_seconds:g} s and was stopped; nothing was recorded or spent (raise it, "
            "or use synthesizer: mst)"
        ) from None
    finally:
        Path(handle.name).unlink(missing_ok=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines or not out.exists():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise SynthesizerError(
            f"the {name} synthesizer ({python}) failed with exit code {done.returncode}: {last}"
        )
    answer: dict[str, Any] = json.loads(lines[-1])
    return answer


def _shares(values: pd.Series) -> pd.Series:
    return values.value_counts(normalize=True)


def _tvd(real: pd.Series, synthetic: pd.Series) -> float:
    """Total variation distance between two columns' distributions (0: equal, 1: disjoint)."""
    return float(0.5 * _shares(real).sub(_shares(synthetic), fill_value=0).abs().sum())


def _binned(frame: pd.DataFrame, schema: DatasetSchema, bins: int) -> pd.DataFrame:
    """Numbers cut into the synthesizer's bins, so marginals compare like with like."""
    out = frame.copy()
    for name in schema.columns:
        column = schema.columns[name]
        if not isinstance(column, CategoricalColumn) and column.bounds is not None:
            edges = np.linspace(column.bounds[0], column.bounds[1], bins + 1)
            out[name] = np.digitize(frame[name].astype(float), edges[1:-1])
    return out


def marginal_report(
    real: pd.DataFrame, synthetic: pd.DataFrame, schema: DatasetSchema, bins: int
) -> dict[str, Any]:
    """How close the copy is: each column's 1-way TVD, and each sensitive feature's 2-way TVD
    with the target. It reads the real rows, so it is for the data owner: not private."""
    a, b = _binned(real, schema, bins), _binned(synthetic, schema, bins)
    target = schema.target.column
    one_way = {name: round(_tvd(a[name], b[name]), 6) for name in schema.columns}

    def joint(frame: pd.DataFrame, feature: str) -> pd.Series:
        return frame[feature].astype(str) + "|" + frame[target].astype(str)

    two_way = {
        f"{feature} x {target}": round(_tvd(joint(a, feature), joint(b, feature)), 6)
        for feature in schema.sensitive_features
        if feature in a.columns
    }
    return {"one_way_tvd": one_way, "two_way_tvd": two_way, "bins": bins}


def synthetic_statement(release: SyntheticRelease, reused: bool) -> str:
    """Exactly what is protected, for the report and the model card."""
    how = "reused from the ledger" if reused else "made in this run"
    return (
        f"The models trained only on a differentially private synthetic copy of the "
        f"{release.rows:,} training rows ({release.synthesizer}, (ε = {release.epsilon:g}, "
        f"δ = {release.delta:g})-DP, numbers in {release.bins} bins of their public bounds; "
        f"{how}), so they are (ε = {release.epsilon:g}, δ = {release.delta:g})-DP with respect "
        "to the training rows (post-processing). The number of rows is treated as public. The "
        "validation and test rows are real and not protected, and the comparison of the copy "
        "with the real rows reads them (it is for the data owner)."
    )
