"""Fairness audit (Fairlearn ``MetricFrame``) and the gate a candidate must pass to be promoted.

Per sensitive feature, and for the intersection of all of them, the audit reports each group's
selection rate, true and false positive rates, accuracy and row count. The disparity metrics are
Fairlearn's definitions over the groups large enough to measure:

- demographic-parity difference: max - min selection rate; ratio: min / max,
- equalized-odds difference: the larger of the TPR gap and the FPR gap.

A group with fewer than ``min_group_rows`` test rows (or with no positive or no negative rows, so
a rate is undefined) is listed, with its counts, but left out of those metrics; the report says
so rather than dividing by zero or gating on the noise of a dozen rows.

A regression target is audited on each group's mean absolute error and mean prediction: the
gate limits the worst measured group's MAE over the best's (``max_mae_ratio``) and, in the
manner of Fairlearn's bounded group loss, each measured group's MAE (``max_group_mae``).
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from trustflow.config import DatasetSchema, FairnessConfig, Frozen, NumericColumn

INTERSECTION = " & "  # joins feature names, and group labels, of the intersection
RATES = ("selection_rate", "tpr", "fpr", "accuracy")
REGRESSION_RATES = ("mae", "mean_prediction")
RATE_TITLES = {
    "selection_rate": "Selection rate",
    "tpr": "True positive rate",
    "fpr": "False positive rate",
    "accuracy": "Accuracy",
    "mae": "Mean absolute error",
    "mean_prediction": "Mean prediction",
}
Disparity = Literal[
    "equalized_odds_difference", "demographic_parity_difference", "mae_ratio", "group_mae"
]


class GroupMetrics(Frozen):
    group: str
    count: int
    measured: bool  # counted in the disparity metrics
    note: str = ""  # why it is not
    # A classifier's:
    positives: int = 0
    selection_rate: float | None = None
    tpr: float | None = None  # None when the group has no positive rows
    fpr: float | None = None  # None when the group has no negative rows
    accuracy: float | None = None
    # A regressor's:
    mae: float | None = None
    mean_prediction: float | None = None


class Gap(Frozen):
    """Where a disparity comes from: the rate, and the groups with the highest and lowest."""

    rate: str
    high_group: str
    high: float
    low_group: str
    low: float

    def describe(self) -> str:
        return (
            f"{RATE_TITLES[self.rate].lower()} {self.high_group} {self.high:.3f} vs "
            f"{self.low_group} {self.low:.3f}"
        )


class Violation(Frozen):
    candidate: str
    feature: str
    metric: Disparity
    value: float
    limit: float
    gap: Gap

    def describe(self) -> str:
        return (
            f"{self.metric} for {self.feature} = {self.value:.3f} "
            f"({self.gap.describe()}) exceeds fairness.max_{self.metric} = {self.limit:g}"
        )


class FeatureAudit(Frozen):
    feature: str
    gated: bool  # its violations block promotion (otherwise they are reported as warnings)
    groups: list[GroupMetrics]
    demographic_parity_difference: float | None  # None when fewer than two groups are measured
    demographic_parity_ratio: float | None
    equalized_odds_difference: float | None
    gaps: dict[str, Gap]  # disparity metric -> where it comes from
    warnings: list[str]
    violations: list[Violation]
    # Why a gated feature with limits could not be measured (fails the gate); "" otherwise.
    unmeasured: str = ""
    # A regressor's (the classification disparities above are then None):
    regression: bool = False
    mae_ratio: float | None = None  # the worst measured group's MAE over the best's
    worst_group_mae: float | None = None

    @property
    def passed(self) -> bool:
        return not self.violations and not self.unmeasured

    def disparities(self) -> dict[str, float | None]:
        if self.regression:
            return {"mae_ratio": self.mae_ratio, "worst_group_mae": self.worst_group_mae}
        return {
            "demographic_parity_difference": self.demographic_parity_difference,
            "demographic_parity_ratio": self.demographic_parity_ratio,
            "equalized_odds_difference": self.equalized_odds_difference,
        }


class FairnessAudit(Frozen):
    candidate: str
    rows: int
    min_group_rows: int
    limits: dict[str, float | None]
    features: dict[str, FeatureAudit]

    @property
    def passed(self) -> bool:
        return all(feature.passed for feature in self.features.values())

    @property
    def violations(self) -> list[Violation]:
        return [v for feature in self.features.values() for v in feature.violations]

    @property
    def warnings(self) -> list[str]:
        return [w for feature in self.features.values() for w in feature.warnings]

    def reason(self) -> str:
        """One line: the worst violation (the largest excess over its limit), or a pass."""
        violations = self.violations
        if not violations:
            unmeasured = [f.unmeasured for f in self.features.values() if f.unmeasured]
            return unmeasured[0] if unmeasured else "fairness limits met"
        worst = max(violations, key=lambda v: v.value - v.limit)
        more = len(violations) - 1
        return worst.describe() + (f" (and {more} more)" if more else "")


def audited_features(features: tuple[str, ...], cfg: FairnessConfig) -> list[str]:
    """The single features and, when configured and there are several, their intersection."""
    names = list(features)
    if cfg.intersection != "off" and len(features) > 1:
        names.append(INTERSECTION.join(features))
    return names


def _finest_counts(
    frame: pd.DataFrame, target: np.ndarray, predicted: np.ndarray, features: tuple[str, ...]
) -> pd.DataFrame:
    """One Fairlearn ``MetricFrame`` over the finest groups (each combination of the features)
    with additive counts only: every coarser grouping is a sum of its rows, so one pass serves
    the single features and their intersection alike."""
    from fairlearn.metrics import MetricFrame, count

    def positives(y_true: np.ndarray, y_pred: np.ndarray) -> int:
        return int(np.sum(y_true))

    def selected(y_true: np.ndarray, y_pred: np.ndarray) -> int:
        return int(np.sum(y_pred))

    def true_positives(y_true: np.ndarray, y_pred: np.ndarray) -> int:
        return int(np.sum(np.asarray(y_true) * np.asarray(y_pred)))

    groups = pd.DataFrame(
        {name: frame[name].astype("string").fillna("(missing)") for name in features}
    )
    metrics = MetricFrame(
        metrics={
            "count": count,
            "positives": positives,
            "selected": selected,
            "true_positives": true_positives,
        },
        y_true=np.asarray(target, dtype=np.int64),
        y_pred=np.asarray(predicted, dtype=np.int64),
        sensitive_features=groups,
    )
    # by_group lists every combination of values; the ones with no rows are empty (NaN).
    table: pd.DataFrame = metrics.by_group.dropna(subset=["count"]).reset_index()
    return table[table["count"] > 0]


def _group_table(counts: pd.DataFrame, feature: str) -> pd.DataFrame:
    """Rates per group of ``feature`` (one column, or an intersection ``a & b``) from the finest
    counts. TPR (FPR) is NaN for a group with no positive (negative) row, where Fairlearn's own
    rate functions would warn and return 0."""
    columns = feature.split(INTERSECTION)
    summed = counts.groupby(columns)[["count", "positives", "selected", "true_positives"]].sum()
    if len(columns) > 1:
        summed.index = [INTERSECTION.join(map(str, key)) for key in summed.index]
    summed.index = summed.index.map(str)
    n, pos, sel, tp = (summed[c].astype(float) for c in summed.columns)
    neg, fp = n - pos, sel - tp
    return pd.DataFrame(
        {
            "count": n,
            "positives": pos,
            "selection_rate": sel / n,
            "tpr": (tp / pos).where(pos > 0),
            "fpr": (fp / neg).where(neg > 0),
            "accuracy": (tp + (neg - fp)) / n,
        }
    )


def _unmeasured(
    feature: str,
    gated: bool,
    rows: list[GroupMetrics],
    warnings: list[str],
    unmeasured: str,
    regression: bool = False,
) -> FeatureAudit:
    """A feature with fewer than two measurable groups: no disparity, no violation; it fails
    the gate only through ``unmeasured`` (empty when it may pass)."""
    return FeatureAudit(
        feature=feature,
        gated=gated,
        groups=rows,
        demographic_parity_difference=None,
        demographic_parity_ratio=None,
        equalized_odds_difference=None,
        gaps={},
        warnings=warnings,
        violations=[],
        unmeasured=unmeasured,
        regression=regression,
    )


def _gap(table: pd.DataFrame, rate: str) -> Gap:
    column = table[rate].astype(float)
    return Gap(
        rate=rate,
        high_group=str(column.idxmax()),
        high=float(column.max()),
        low_group=str(column.idxmin()),
        low=float(column.min()),
    )


def audit_feature(
    candidate: str,
    feature: str,
    table: pd.DataFrame,
    cfg: FairnessConfig,
    gated: bool = True,
) -> FeatureAudit:
    rows: list[GroupMetrics] = []
    for group, row in table.iterrows():
        count = int(row["count"])
        tpr, fpr = float(row["tpr"]), float(row["fpr"])
        note = ""
        if count < cfg.min_group_rows:
            note = f"{count} rows < fairness.min_group_rows = {cfg.min_group_rows}"
        elif math.isnan(tpr) or math.isnan(fpr):
            note = "no positive rows" if math.isnan(tpr) else "no negative rows"
        rows.append(
            GroupMetrics(
                group=str(group),
                count=count,
                positives=int(row["positives"]),
                selection_rate=float(row["selection_rate"]),
                tpr=None if math.isnan(tpr) else float(tpr),
                fpr=None if math.isnan(fpr) else float(fpr),
                accuracy=float(row["accuracy"]),
                measured=not note,
                note=note,
            )
        )
    measured = table.loc[[str(row.group) for row in rows if row.measured]]
    warnings = [
        f"{feature} = {row.group}: not measured ({row.note})" for row in rows if not row.measured
    ]
    if len(measured) < 2:
        warnings.append(
            f"{feature}: fewer than two groups with at least {cfg.min_group_rows} rows; "
            "no disparity measured and no limit applied"
        )
        limited = (cfg.max_equalized_odds_difference, cfg.max_demographic_parity_difference)
        unmeasured = ""
        if gated and cfg.unmeasured == "fail" and any(x is not None for x in limited):
            counts = ", ".join(f"{row.group} {row.count}" for row in rows)
            unmeasured = (
                f"{feature} not measured: fewer than two groups with at least "
                f"{cfg.min_group_rows} test rows and both classes ({counts}); "
                "fairness.unmeasured=allow accepts that"
            )
        return _unmeasured(feature, gated, rows, warnings, unmeasured)
    selection = _gap(measured, "selection_rate")
    odds = max((_gap(measured, "tpr"), _gap(measured, "fpr")), key=lambda g: g.high - g.low)
    disparities: dict[Disparity, tuple[float, Gap]] = {
        "demographic_parity_difference": (selection.high - selection.low, selection),
        "equalized_odds_difference": (odds.high - odds.low, odds),
    }
    limits: dict[Disparity, float | None] = {
        "demographic_parity_difference": cfg.max_demographic_parity_difference,
        "equalized_odds_difference": cfg.max_equalized_odds_difference,
    }
    exceeded = [
        Violation(
            candidate=candidate, feature=feature, metric=metric, value=value, limit=limit, gap=gap
        )
        for metric, (value, gap) in disparities.items()
        if (limit := limits[metric]) is not None and value > limit
    ]
    if not gated:
        warnings += [
            f"{v.describe()}: reported, not gated (fairness.intersection)" for v in exceeded
        ]
    violations = exceeded if gated else []
    return FeatureAudit(
        feature=feature,
        gated=gated,
        groups=rows,
        demographic_parity_difference=disparities["demographic_parity_difference"][0],
        demographic_parity_ratio=selection.low / selection.high if selection.high > 0 else 1.0,
        equalized_odds_difference=disparities["equalized_odds_difference"][0],
        gaps={metric: gap for metric, (_, gap) in disparities.items()},
        warnings=warnings,
        violations=violations,
    )


def sensitive_groups(
    frame: pd.DataFrame, schema: DatasetSchema, features: tuple[str, ...]
) -> pd.DataFrame:
    """The audited features as group labels: a categorical column as it is, a numeric one by
    the bins its schema gives."""
    columns = {
        name: _binned(frame[name], spec.bins)
        if isinstance(spec := schema.columns[name], NumericColumn) and spec.bins is not None
        else frame[name]
        for name in features
    }
    return pd.DataFrame(columns, index=frame.index)


def _binned(values: pd.Series, bins: tuple[float, ...]) -> pd.Series:
    """Each value's bin, named by its edges: <a, a-b (from a, below b), ..., >=z; a missing
    value stays missing."""
    edges = [f"{edge:g}" for edge in bins]
    labels = [f"<{edges[0]}", *(f"{a}-{b}" for a, b in itertools.pairwise(edges)), f">={edges[-1]}"]
    cuts = [-np.inf, *bins, np.inf]
    return pd.cut(values, cuts, right=False, labels=labels).astype("string")


def audit_predictions(
    candidate: str,
    frame: pd.DataFrame,
    target: np.ndarray,
    predicted: np.ndarray,
    features: tuple[str, ...],
    cfg: FairnessConfig,
    labels: tuple[str, ...] = (),
) -> FairnessAudit:
    """Audit one candidate's predicted labels on ``frame`` (the test split). With more than two
    ``labels`` (a multiclass target encoded 0, 1, ...), each class is audited one against the
    rest, and each feature keeps its worst class's audit, the class named."""
    if len(labels) > 2 and features:
        return _worst_class(candidate, frame, target, predicted, features, cfg, labels)
    # No sensitive feature declared: nothing to group by, an audit of no features.
    counts = _finest_counts(frame, target, predicted, features) if features else pd.DataFrame()
    return FairnessAudit(
        candidate=candidate,
        rows=len(frame),
        min_group_rows=cfg.min_group_rows,
        limits={
            "max_equalized_odds_difference": cfg.max_equalized_odds_difference,
            "max_demographic_parity_difference": cfg.max_demographic_parity_difference,
        },
        features={
            name: audit_feature(
                candidate,
                name,
                _group_table(counts, name),
                cfg,
                gated=name in features or cfg.intersection == "gate",
            )
            for name in audited_features(features, cfg)
        },
    )


def _worst_class(
    candidate: str,
    frame: pd.DataFrame,
    target: np.ndarray,
    predicted: np.ndarray,
    features: tuple[str, ...],
    cfg: FairnessConfig,
    labels: tuple[str, ...],
) -> FairnessAudit:
    per_class = {
        label: audit_predictions(
            candidate,
            frame,
            (target == code).astype(np.int64),
            (predicted == code).astype(np.int64),
            features,
            cfg,
        )
        for code, label in enumerate(labels)
    }

    def severity(item: tuple[str, FeatureAudit]) -> tuple[bool, float]:
        audit = item[1]
        return (not audit.passed, audit.equalized_odds_difference or 0.0)

    worst: dict[str, FeatureAudit] = {}
    for name in audited_features(features, cfg):
        label, audit = max(((lb, a.features[name]) for lb, a in per_class.items()), key=severity)
        where = f"{name} (class '{label}' vs the rest)"
        worst[name] = audit.model_copy(
            update={
                "violations": [v.model_copy(update={"feature": where}) for v in audit.violations],
                "warnings": [f"class '{label}' vs the rest: {w}" for w in audit.warnings],
                "unmeasured": audit.unmeasured
                and f"class '{label}' vs the rest: {audit.unmeasured}",
            }
        )
    first = next(iter(per_class.values()))
    return first.model_copy(update={"features": worst})


def audit_regression(
    candidate: str,
    frame: pd.DataFrame,
    target: np.ndarray,
    predicted: np.ndarray,
    features: tuple[str, ...],
    cfg: FairnessConfig,
) -> FairnessAudit:
    """Audit one regressor's predictions on ``frame`` (the test split), group by group."""
    errors = pd.DataFrame(
        {
            "error": np.abs(np.asarray(predicted, dtype=np.float64) - target),
            "predicted": np.asarray(predicted, dtype=np.float64),
        },
        index=frame.index,
    )
    groups = pd.DataFrame(
        {name: frame[name].astype("string").fillna("(missing)") for name in features}
    )
    return FairnessAudit(
        candidate=candidate,
        rows=len(frame),
        min_group_rows=cfg.min_group_rows,
        limits={"max_mae_ratio": cfg.max_mae_ratio, "max_group_mae": cfg.max_group_mae},
        features={
            name: _audit_regression_feature(
                candidate,
                name,
                errors,
                groups,
                cfg,
                gated=name in features or cfg.intersection == "gate",
            )
            for name in audited_features(features, cfg)
        },
    )


def _audit_regression_feature(
    candidate: str,
    feature: str,
    errors: pd.DataFrame,
    groups: pd.DataFrame,
    cfg: FairnessConfig,
    gated: bool,
) -> FeatureAudit:
    keys = groups[feature.split(INTERSECTION)].astype(str).agg(INTERSECTION.join, axis=1)
    table = errors.groupby(keys).agg(
        count=("error", "size"), mae=("error", "mean"), mean_prediction=("predicted", "mean")
    )
    rows = [
        GroupMetrics(
            group=str(group),
            count=int(row["count"]),
            mae=float(row["mae"]),
            mean_prediction=float(row["mean_prediction"]),
            measured=int(row["count"]) >= cfg.min_group_rows,
            note=""
            if int(row["count"]) >= cfg.min_group_rows
            else f"{int(row['count'])} rows < fairness.min_group_rows = {cfg.min_group_rows}",
        )
        for group, row in table.iterrows()
    ]
    warnings = [
        f"{feature} = {row.group}: not measured ({row.note})" for row in rows if not row.measured
    ]
    measured = table.loc[[row.group for row in rows if row.measured]]
    if len(measured) < 2:
        counts = ", ".join(f"{row.group} {row.count}" for row in rows)
        limited = cfg.max_mae_ratio is not None or cfg.max_group_mae is not None
        warnings.append(
            f"{feature}: fewer than two groups with at least {cfg.min_group_rows} rows; "
            "no disparity measured and no limit applied"
        )
        unmeasured = (
            f"{feature} not measured: fewer than two groups with at least "
            f"{cfg.min_group_rows} test rows ({counts}); fairness.unmeasured=allow accepts that"
            if gated and cfg.unmeasured == "fail" and limited
            else ""
        )
        return _unmeasured(feature, gated, rows, warnings, unmeasured, regression=True)
    gap = _gap(measured, "mae")
    ratio = gap.high / gap.low if gap.low > 0 else math.inf
    exceeded = [
        Violation(
            candidate=candidate, feature=feature, metric=metric, value=value, limit=limit, gap=gap
        )
        for metric, value, limit in (
            ("mae_ratio", ratio, cfg.max_mae_ratio),
            ("group_mae", gap.high, cfg.max_group_mae),
        )
        if limit is not None and value > limit
    ]
    if not gated:
        warnings += [
            f"{v.describe()}: reported, not gated (fairness.intersection)" for v in exceeded
        ]
    return FeatureAudit(
        feature=feature,
        gated=gated,
        groups=rows,
        demographic_parity_difference=None,
        demographic_parity_ratio=None,
        equalized_odds_difference=None,
        gaps={"mae_ratio": gap, "mean_prediction": _gap(measured, "mean_prediction")},
        warnings=warnings,
        violations=exceeded if gated else [],
        regression=True,
        mae_ratio=ratio,
        worst_group_mae=gap.high,
    )


def audit_figure(audit: FeatureAudit, title: str) -> Figure:
    """One bar chart per rate, a bar per group; groups left out of the metrics are hatched."""
    groups = audit.groups
    rates = REGRESSION_RATES if audit.regression else RATES
    fig = Figure(figsize=(10 if len(rates) > 2 else 7, 2.2 + 0.28 * len(groups)), dpi=100)
    axes = fig.subplots(1, len(rates), sharey=True)
    positions = np.arange(len(groups))
    for ax, rate in zip(axes, rates, strict=True):
        values = [getattr(g, rate) if getattr(g, rate) is not None else 0.0 for g in groups]
        bars = ax.barh(positions, values, color=["C0" if g.measured else "0.75" for g in groups])
        for bar, group in zip(bars, groups, strict=True):
            if not group.measured:
                bar.set_hatch("//")
        ax.set(title=RATE_TITLES[rate])
        if not audit.regression:
            ax.set(xlim=(0, 1))
        ax.grid(axis="x", linewidth=0.3)
    axes[0].set_yticks(positions, labels=[f"{g.group} (n={g.count:,})" for g in groups])
    axes[0].invert_yaxis()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def fairness_table(audit: FairnessAudit) -> str:
    """The disparity metrics per feature as a Markdown table (the model card's)."""

    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    def passed(feature: FeatureAudit) -> str:
        return ("yes" if feature.passed else "no") if feature.gated else "not gated"

    if any(feature.regression for feature in audit.features.values()):
        lines = [
            "| Feature | Worst group MAE | MAE ratio (worst / best group) | Passed |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {name} | {number(feature.worst_group_mae)} | {number(feature.mae_ratio)} "
            f"| {passed(feature)} |"
            for name, feature in audit.features.items()
        ]
        return "\n".join(lines)
    lines = [
        "| Feature | Demographic parity difference | Demographic parity ratio "
        "| Equalized odds difference | Passed |",
        "|---|---|---|---|---|",
    ]
    for name, feature in audit.features.items():
        lines.append(
            f"| {name} | {number(feature.demographic_parity_difference)} "
            f"| {number(feature.demographic_parity_ratio)} "
            f"| {number(feature.equalized_odds_difference)} "
            f"| {('yes' if feature.passed else 'no') if feature.gated else 'not gated'} |"
        )
    return "\n".join(lines)
