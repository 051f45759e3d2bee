"""Model kinds: each declared once, with its typed params, its builder and its traits.

Flows and tasks ask a kind's traits ("does it take raw features?", "is it a network?"); they
never compare kind names. An unknown kind, or a param a kind does not take, fails when the
config loads, naming the candidate, the key and the keys it allows.

Adding a kind is one entry in ``KINDS``: a params model (``extra="forbid"``: a typo is an error)
and a builder, or a trait that routes it to the network or mitigation path. This module stays
light (pydantic only; builders import their libraries when called), because the config loads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trustflow.errors import ConfigError


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def given(self) -> dict[str, Any]:
        """Only the params the config set: the library's own defaults stay in charge of the
        rest, so a default run builds exactly the estimator it always did."""
        return self.model_dump(exclude_unset=True)


ClassWeight = Literal["balanced"] | None
Task = Literal["binary", "multiclass", "regression"]
CLASSES: frozenset[Task] = frozenset({"binary", "multiclass"})
ALL_TASKS: frozenset[Task] = frozenset({"binary", "multiclass", "regression"})


class LogisticRegressionParams(Params):
    C: float = Field(default=1.0, gt=0)
    max_iter: int = Field(default=2000, ge=1)
    tol: float = Field(default=1e-4, gt=0)
    class_weight: ClassWeight = None
    solver: Literal["lbfgs", "liblinear", "newton-cg", "newton-cholesky", "sag", "saga"] = "lbfgs"
    l1_ratio: float = Field(default=0.0, ge=0, le=1)


class RidgeParams(Params):
    alpha: float = Field(default=1.0, ge=0)


class HistGradientBoostingParams(Params):
    learning_rate: float = Field(default=0.1, gt=0)
    max_iter: int = Field(default=100, ge=1)
    max_leaf_nodes: int | None = Field(default=31, ge=2)
    max_depth: int | None = Field(default=None, ge=1)
    min_samples_leaf: int = Field(default=20, ge=1)
    l2_regularization: float = Field(default=0.0, ge=0)
    max_bins: int = Field(default=255, ge=2, le=255)
    early_stopping: Literal["auto"] | bool = "auto"
    class_weight: ClassWeight = None


class RandomForestParams(Params):
    n_estimators: int = Field(default=100, ge=1)
    max_depth: int | None = Field(default=None, ge=1)
    min_samples_leaf: int = Field(default=1, ge=1)
    max_features: Literal["sqrt", "log2"] | float | None = "sqrt"
    class_weight: Literal["balanced", "balanced_subsample"] | None = None
    n_jobs: int | None = None  # trees in parallel; the result does not depend on it


class ExplainableBoostingParams(Params):
    outer_bags: int = Field(default=14, ge=1)
    inner_bags: int = Field(default=0, ge=0)
    # How many pairwise terms: a count, a fraction of the features, or "3x" (three times the
    # number of features).
    interactions: int | float | str = "3x"
    learning_rate: float = Field(default=0.015, gt=0)
    max_bins: int = Field(default=1024, ge=2)
    max_leaves: int = Field(default=2, ge=2)
    min_samples_leaf: int = Field(default=4, ge=1)
    max_rounds: int = Field(default=50000, ge=1)
    early_stopping_rounds: int = Field(default=100, ge=0)
    validation_size: float = Field(default=0.15, ge=0, lt=1)


class ThresholdOptimizerParams(Params):
    base: str  # the candidate it post-processes
    sensitive_feature: str
    constraints: Literal[
        "equalized_odds",
        "demographic_parity",
        "true_positive_rate_parity",
        "false_positive_rate_parity",
        "true_negative_rate_parity",
        "false_negative_rate_parity",
    ] = "equalized_odds"
    objective: Literal[
        "accuracy_score",
        "balanced_accuracy_score",
        "selection_rate",
        "true_positive_rate",
        "true_negative_rate",
    ] = "accuracy_score"
    # A group with fewer validation rows than this, or with one class only, cannot be given
    # thresholds of its own: fold such groups into one, or fail the candidate naming them.
    small_groups: Literal["fold", "fail"] = "fold"
    min_group_rows: int = Field(default=30, ge=1)


class PeriodicParams(Params):
    """Periodic embeddings of the numeric inputs (learned sin/cos, Gorishniy et al.)."""

    frequencies: int = Field(default=24, ge=1)
    width: int = Field(default=8, ge=1)
    sigma: float = Field(default=1.0, gt=0)


class MlpParams(Params):
    hidden: list[int] = Field(default_factory=lambda: [128, 64], min_length=1)
    # How many leading inputs are numbers (the shared preprocessor puts them first; the train
    # task fills it in); 0: no periodic embeddings.
    numeric: int = Field(default=0, ge=0)
    periodic: PeriodicParams = Field(default_factory=PeriodicParams)
    learning_rate: float = Field(default=5e-4, gt=0)
    fine_tune_learning_rate: float = Field(default=1.25e-4, gt=0)  # after a warm start
    weight_decay: float = Field(default=1e-4, ge=0)
    batch_size: int = Field(default=512, ge=1)
    max_epochs: int = Field(default=40, ge=1)
    patience: int = Field(default=4, ge=1)


class DpLogisticRegressionParams(Params):
    """A linear module trained by DP-SGD: large Poisson batches and a few epochs, since every
    step adds noise (the guarantee counts the planned epochs, not the ones early stopping ran)."""

    learning_rate: float = Field(default=4e-3, gt=0)
    fine_tune_learning_rate: float = Field(default=1e-3, gt=0)  # after a warm start
    weight_decay: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=2048, ge=1)
    max_epochs: int = Field(default=10, ge=1)
    patience: int = Field(default=4, ge=1)


class KerasMlpParams(Params):
    hidden: list[int] = Field(default_factory=lambda: [128, 64], min_length=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    fine_tune_learning_rate: float = Field(default=2.5e-4, gt=0)  # after a warm start
    weight_decay: float = Field(default=1e-4, ge=0)
    batch_size: int = Field(default=512, ge=1)
    max_epochs: int = Field(default=40, ge=1)
    patience: int = Field(default=4, ge=1)


class CnnParams(Params):
    channels: list[int] = Field(default_factory=lambda: [16, 32], min_length=1)
    dense: int = Field(default=64, ge=1)
    learning_rate: float = Field(default=2e-3, gt=0)
    fine_tune_learning_rate: float = Field(default=5e-4, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    batch_size: int = Field(default=64, ge=1)
    max_epochs: int = Field(default=60, ge=1)
    patience: int = Field(default=8, ge=1)
    shift: int = Field(default=1, ge=0)  # augmentation: random translation by up to this many px
    image: list[int] = Field(default_factory=lambda: [8, 8], min_length=2, max_length=2)


def _logistic_regression(params: LogisticRegressionParams, seed: int, task: Task) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(**{"max_iter": 2000, **params.given(), "random_state": seed})


def _ridge(params: RidgeParams, seed: int, task: Task) -> Any:
    from sklearn.linear_model import Ridge

    return Ridge(**params.given(), random_state=seed)


def _hist_gradient_boosting(params: HistGradientBoostingParams, seed: int, task: Task) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    if task == "regression":
        return HistGradientBoostingRegressor(**params.given(), random_state=seed)
    return HistGradientBoostingClassifier(**params.given(), random_state=seed)


def _random_forest(params: RandomForestParams, seed: int, task: Task) -> Any:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    if task == "regression":
        return RandomForestRegressor(**params.given(), random_state=seed)
    return RandomForestClassifier(**params.given(), random_state=seed)


def _explainable_boosting(params: ExplainableBoostingParams, seed: int, task: Task) -> Any:
    from interpret.glassbox import ExplainableBoostingClassifier, ExplainableBoostingRegressor

    if task == "regression":
        return ExplainableBoostingRegressor(**params.given(), random_state=seed)
    return ExplainableBoostingClassifier(**params.given(), random_state=seed)


OnnxConverter = Literal["skl2onnx", "ebm2onnx", "network"]


@dataclass(frozen=True)
class ModelKind:
    name: str
    summary: str  # one line, for `trustflow kinds` and the docs
    params: type[Params]
    framework: Literal["scikit-learn", "interpret", "fairlearn", "lightning", "keras"]
    # (params, seed, task) -> an unfitted estimator; None for kinds trained another way (the
    # flags below say which).
    build: Callable[[Any, int, Task], Any] | None
    raw_features: bool = False  # fitted on the raw columns, not the shared preprocessing
    glass_box: bool = False  # readable on its own: explained by its own terms
    mitigation: bool = False  # post-processes another candidate (params.base) for fairness
    # A network (Lightning or Keras): trained with a validation split and the trainer settings,
    # warm-started, its epoch history tracked.
    network: bool = False
    # A Lightning network's layers: "mlp" (hidden layers, periodic embeddings of the numbers) or
    # "linear" (one linear layer: a logistic regression).
    architecture: Literal["mlp", "linear"] = "mlp"
    onnx: OnnxConverter | None = "skl2onnx"  # None: it has no ONNX form (cannot be deployed)
    # Its ONNX graph ends in one linear layer and a sigmoid, so the server can evaluate that
    # head on encrypted features (trustflow.crypto; encryption.enabled).
    linear_head: bool = False
    # The target tasks it can learn (DatasetSchema target.task).
    tasks: frozenset[Task] = CLASSES
    # DP-SGD (Opacus) in privacy.mode: training. "training": it trains with DP-SGD in that mode
    # and without it otherwise; "only": it exists for that mode (a config error in the others);
    # "never": that mode leaves it out (its training would not be private).
    dp_sgd: Literal["never", "training", "only"] = "never"

    def validate(self, params: dict[str, Any]) -> Params:
        return self.params.model_validate(params)


KINDS: dict[str, ModelKind] = {
    kind.name: kind
    for kind in (
        ModelKind(
            "logistic_regression",
            "a linear baseline on the shared preprocessing",
            LogisticRegressionParams,
            "scikit-learn",
            _logistic_regression,
            linear_head=True,
        ),
        ModelKind(
            "ridge",
            "a linear regression (L2-penalised) on the shared preprocessing",
            RidgeParams,
            "scikit-learn",
            _ridge,
            tasks=frozenset({"regression"}),
        ),
        ModelKind(
            "hist_gradient_boosting",
            "gradient-boosted trees on the shared preprocessing",
            HistGradientBoostingParams,
            "scikit-learn",
            _hist_gradient_boosting,
            tasks=ALL_TASKS,
        ),
        ModelKind(
            "random_forest",
            "a random forest on the shared preprocessing",
            RandomForestParams,
            "scikit-learn",
            _random_forest,
            tasks=ALL_TASKS,
        ),
        ModelKind(
            "explainable_boosting",
            "InterpretML's glass-box EBM, on the raw features",
            ExplainableBoostingParams,
            "interpret",
            _explainable_boosting,
            raw_features=True,
            glass_box=True,
            onnx="ebm2onnx",
            tasks=ALL_TASKS,
        ),
        ModelKind(
            "threshold_optimizer",
            "Fairlearn's post-processing of another candidate (params.base)",
            ThresholdOptimizerParams,
            "fairlearn",
            None,
            mitigation=True,
            onnx=None,
            tasks=frozenset({"binary"}),  # thresholds on one score: two classes only
        ),
        ModelKind(
            "mlp",
            "a PyTorch Lightning network on the shared preprocessing (warm-starts)",
            MlpParams,
            "lightning",
            None,
            network=True,
            onnx="network",
            tasks=ALL_TASKS,
            dp_sgd="training",
        ),
        ModelKind(
            "dp_logistic_regression",
            "a logistic regression trained by DP-SGD (Opacus), for privacy.mode: training",
            DpLogisticRegressionParams,
            "lightning",
            None,
            network=True,
            architecture="linear",
            onnx="network",
            dp_sgd="only",
        ),
        ModelKind(
            "keras_mlp",
            "a Keras 3 network (torch backend) on the shared preprocessing (warm-starts)",
            KerasMlpParams,
            "keras",
            None,
            network=True,
            onnx="network",
        ),
    )
}


def model_kind(name: str) -> ModelKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"unknown model kind '{name}'; known kinds: {', '.join(KINDS)}") from None


def params_problem(kind: ModelKind, params: dict[str, Any]) -> str | None:
    """None when ``params`` suit ``kind``, else one line naming the key and what is allowed."""
    try:
        kind.validate(params)
    except ValidationError as exc:
        return params_problem_of(kind.params, exc)
    return None


def params_problem_of(model: type[Params], exc: ValidationError) -> str:
    """A params model's validation error as one line: the key, and the keys it allows."""
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    allowed = ", ".join(model.model_fields)
    if error["type"] == "extra_forbidden":
        return f"unknown param '{key}'; allowed: {allowed}"
    if error["type"] == "missing":
        return f"param '{key}' is required; allowed: {allowed}"
    return f"params.{key} = {error.get('input')!r}: {error['msg']}"
