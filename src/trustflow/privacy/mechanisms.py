"""Differentially private preprocessing statistics, measured with OpenDP.

What is released (each a separate measurement on the training rows, neighbouring data sets
differing by one added or removed row):

- the row count (one, shared by every column),
- per numeric column: the sum of the values clamped to the schema's public bounds, and the sum
  of squared deviations from the bounds' midpoint (clamped to [0, (half range)²]),
- per categorical column: the count of each public category (plus one for anything else).

The privacy parameter is split over those statistics evenly, or by ``privacy.column_weights``
(each statistic of a listed column weighs its weight, every other statistic 1). ``pure``: each
is a Laplace measurement with ε_i (summing to ε), composing to ε-DP. ``zcdp``: each is a
Gaussian measurement with ρ_i (summing to ρ), where ρ is the largest zero-concentrated
privacy loss whose (ε, δ) conversion (ε = ρ + 2·sqrt(ρ·ln(1/δ)), Bun & Steinke 2016) meets the
configured ε at δ. OpenDP picks each
noise scale so that its own privacy map certifies the share.

Everything after the measurements (means, variances, which categories are kept, the fitted
scikit-learn transformer) is post-processing of the noisy values and costs nothing more. Bounds
and categories come from the public schema, never from the rows. OpenDP draws its noise from a
cryptographically secure generator that cannot be seeded; runs are reproducible because a
release is stored in the ledger and reused, not because the noise repeats.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer

from trustflow.config import (
    CategoricalColumn,
    DatasetSchema,
    Frozen,
    NumericColumn,
    PrivacyConfig,
)
from trustflow.models.preprocess import build_preprocessor


class NumericRelease(Frozen):
    bounds: tuple[float, float]
    noisy_sum: float
    noisy_sum_sq_dev: float  # sum of (x - midpoint)², clamped
    mean: float  # post-processed: clamped to the bounds
    variance: float  # post-processed: within [tiny, (half range)²]


class CategoricalRelease(Frozen):
    counts: dict[str, float]  # noisy count per public category
    other: float  # noisy count of missing or non-schema values
    kept: list[str]


class PrivateRelease(Frozen):
    """The noisy statistics of one release and what they cost."""

    accounting: Literal["pure", "zcdp"]
    epsilon: float  # the release's (ε, δ) guarantee
    delta: float
    rho: float | None  # zCDP: the composed ρ
    statistics: int  # how many measurements the budget was split over
    shares: dict[str, float]  # statistic -> ε_i (pure) or ρ_i (zcdp), as certified by OpenDP
    noisy_rows: float
    numeric: dict[str, NumericRelease]
    categorical: dict[str, CategoricalRelease]


def rho_for(epsilon: float, delta: float) -> float:
    """The ρ whose zCDP-to-(ε, δ) conversion gives exactly ``epsilon`` at ``delta``."""
    log_term = math.log(1 / delta)
    return (math.sqrt(log_term + epsilon) - math.sqrt(log_term)) ** 2


def _opendp() -> Any:
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


class _Measurer:
    """Builds one OpenDP measurement per statistic, each certified to cost its share of the
    budget (ε_i for pure DP, ρ_i for zCDP); records the shares it spent."""

    def __init__(self, accounting: str, shares: dict[str, float]) -> None:
        self.dp = _opendp()
        self.accounting = accounting
        self.shares = shares
        self.share = 0.0

    def of(self, statistic: str) -> _Measurer:
        self.share = self.shares[statistic]
        return self

    def _noised(self, transformation: Any) -> Any:
        dp = self.dp
        then_noise = dp.m.then_laplace if self.accounting == "pure" else dp.m.then_gaussian
        sensitivity = float(transformation.map(1))  # OpenDP's own stability map
        if self.accounting == "pure":  # Laplace: ε = Δ / scale
            scale = sensitivity / self.share
        else:  # Gaussian: ρ = Δ² / (2 scale²)
            scale = sensitivity / math.sqrt(2 * self.share)
        # OpenDP rounds its privacy map conservatively: widen until it certifies the share.
        while (measurement := transformation >> then_noise(scale=scale)).map(1) > self.share:
            scale *= 1.0001
        return measurement

    def clamped_sum(self, values: np.ndarray, bounds: tuple[float, float]) -> float:
        dp = self.dp
        space = (dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.symmetric_distance())
        transformation = space >> dp.t.then_clamp(bounds=bounds) >> dp.t.then_sum()
        return float(self._noised(transformation)(np.ascontiguousarray(values, dtype=np.float64)))

    def count(self, rows: int) -> float:
        dp = self.dp
        space = (dp.vector_domain(dp.atom_domain(T=bool)), dp.symmetric_distance())
        transformation = space >> dp.t.then_count()
        return float(self._noised(transformation)(np.ones(rows, dtype=bool)))

    def category_counts(self, codes: np.ndarray, categories: int) -> list[float]:
        """Noisy counts of codes 0..categories-1, then of everything else (-1: missing or not in
        the schema). Codes rather than strings: OpenDP takes a NumPy array without a per-value
        Python conversion (seconds on Adult)."""
        dp = self.dp
        space = (dp.vector_domain(dp.atom_domain(T=dp.i32)), dp.symmetric_distance())
        # Gaussian noise on a vector is calibrated in L2, Laplace in L1.
        metric = dp.L1Distance[int] if self.accounting == "pure" else dp.L2Distance[int]
        transformation = space >> dp.t.then_count_by_categories(
            categories=list(range(categories)), MO=metric
        )
        noisy = self._noised(transformation)(np.ascontiguousarray(codes, dtype=np.int32))
        return [float(c) for c in noisy]


def release_statistics(
    frame: pd.DataFrame, schema: DatasetSchema, cfg: PrivacyConfig
) -> PrivateRelease:
    """Measure the preprocessing statistics of ``frame`` (the training rows) under DP."""
    numeric = schema.numeric_features
    categorical = schema.categorical_features
    # The split: every statistic weighs 1, a column's statistics weigh privacy.column_weights.
    weights = {"rows": 1.0}
    for name in numeric:
        weight = cfg.column_weights.get(name, 1.0)
        weights |= {f"{name}.sum": weight, f"{name}.sum_sq_dev": weight}
    for name in categorical:
        weights[f"{name}.counts"] = cfg.column_weights.get(name, 1.0)
    rho = rho_for(cfg.epsilon, cfg.delta) if cfg.accounting == "zcdp" else None
    total = rho if rho is not None else cfg.epsilon
    shares = {stat: total * weight / sum(weights.values()) for stat, weight in weights.items()}
    measure = _Measurer(cfg.accounting, shares)

    noisy_rows = measure.of("rows").count(len(frame))
    rows = max(noisy_rows, 1.0)
    numeric_releases: dict[str, NumericRelease] = {}
    for name in numeric:
        spec = schema.columns[name]
        assert isinstance(spec, NumericColumn) and spec.bounds is not None  # config checks it
        low, high = spec.bounds
        middle, half = (low + high) / 2, (high - low) / 2
        # A missing number takes the midpoint: a constant, so it reveals nothing.
        values = np.clip(frame[name].astype(float).fillna(middle).to_numpy(), low, high)
        noisy_sum = measure.of(f"{name}.sum").clamped_sum(values, (low, high))
        noisy_sq = measure.of(f"{name}.sum_sq_dev").clamped_sum(
            (values - middle) ** 2, (0.0, half**2)
        )
        mean = float(np.clip(noisy_sum / rows, low, high))
        # Within [(5 % of the half range)², (half range)²]: noise can push the estimate below
        # zero on small data, and a near-zero scale would blow scaled values up (the floor is a
        # public constant, so post-processing).
        variance = noisy_sq / rows - (mean - middle) ** 2
        variance = float(np.clip(variance, (0.05 * half) ** 2, half**2))
        numeric_releases[name] = NumericRelease(
            bounds=(low, high),
            noisy_sum=noisy_sum,
            noisy_sum_sq_dev=noisy_sq,
            mean=mean,
            variance=variance,
        )
    categorical_releases: dict[str, CategoricalRelease] = {}
    for name in categorical:
        spec = schema.columns[name]
        assert isinstance(spec, CategoricalColumn)
        public = list(spec.categories)
        codes = pd.Categorical(frame[name], categories=public).codes  # -1: missing or other
        noisy = measure.of(f"{name}.counts").category_counts(codes, len(public))
        counts = dict(zip(public, noisy[: len(public)], strict=True))
        kept = [c for c in public if counts[c] >= cfg.min_category_count]
        if not kept:  # an encoder needs one category; keep the likeliest
            kept = [max(public, key=lambda c: counts[c])]
        categorical_releases[name] = CategoricalRelease(
            counts=counts, other=noisy[len(public)], kept=kept
        )
    return PrivateRelease(
        accounting=cfg.accounting,
        epsilon=cfg.epsilon,
        delta=cfg.delta,
        rho=rho,
        statistics=len(shares),
        shares=shares,
        noisy_rows=noisy_rows,
        numeric=numeric_releases,
        categorical=categorical_releases,
    )


def private_preprocessor(schema: DatasetSchema, release: PrivateRelease) -> ColumnTransformer:
    """The standard preprocessor (same steps, same ONNX conversion) with every fitted statistic
    set from the release. It is fitted on one synthetic row of public values first, so that
    scikit-learn's fitted attributes exist; then each statistic is replaced."""
    kept = {name: r.kept for name, r in release.categorical.items()}
    synthetic = pd.DataFrame(
        [
            {
                **{name: r.mean for name, r in release.numeric.items()},
                **{name: r.kept[0] for name, r in release.categorical.items()},
            }
        ],
        columns=schema.feature_columns,
    )
    transformer = build_preprocessor(schema, kept).fit(synthetic)
    numeric = transformer.named_transformers_["numeric"]
    names = schema.numeric_features
    means = np.array([release.numeric[n].mean for n in names], dtype=np.float64)
    variances = np.array([release.numeric[n].variance for n in names], dtype=np.float64)
    numeric.named_steps["impute"].statistics_ = means.copy()
    scaler = numeric.named_steps["scale"]
    scaler.mean_ = means.copy()
    scaler.var_ = variances
    scaler.scale_ = np.sqrt(variances)
    scaler.n_samples_seen_ = max(round(release.noisy_rows), 1)
    return transformer


def privacy_statement(release: PrivateRelease | None, reused: bool = False) -> str:
    """Exactly what is protected, for the report and the model card."""
    if release is None:
        return (
            "No differential privacy. The preprocessing statistics and the model are fitted on "
            "the raw training rows; neither carries a formal privacy guarantee."
        )
    unit = "ε" if release.accounting == "pure" else "ρ"
    low, high = min(release.shares.values()), max(release.shares.values())
    split = (
        f"{release.statistics} statistics at {unit} = {low:.4g} each"
        if math.isclose(low, high)
        else f"{release.statistics} statistics at {unit} = {low:.4g} to {high:.4g}, "
        "weighted by privacy.column_weights"
    )
    if release.accounting == "pure":
        guarantee = (
            f"ε = {release.epsilon:g}-differentially private (pure ε-DP, Laplace noise; {split})"
        )
    else:
        guarantee = (
            f"(ε = {release.epsilon:g}, δ = {release.delta:g})-differentially private "
            f"(ρ = {release.rho:.4g} zero-concentrated DP, Gaussian noise; {split})"
        )
    return (
        f"The shared preprocessing statistics (row count, per numeric column mean and variance "
        f"within the schema's public bounds, per categorical column the category counts that "
        f"decide which categories are kept) are {guarantee} with respect to the training rows, "
        f"measured with OpenDP{' (an earlier release, reused: no new spend)' if reused else ''}. "
        "Nothing else is: the models are trained on the raw training rows and are NOT "
        "differentially private; a glass-box EBM bins the raw features itself, outside this "
        "preprocessing; evaluation, the fairness audit and explanations read the raw test rows."
    )
