"""Typed configuration: frozen pydantic models, YAML in ``configs/``, ``--set a.b=1`` overrides.

The defaults of :class:`TabularConfig` are the bundled UCI Adult pipeline, so ``TabularConfig()``
runs with no file at all. ``configs/tabular.yaml`` is the same tree written out (a test keeps them
equal) and the starting point to copy for another data set.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, overload

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trustflow.errors import ConfigError
from trustflow.models.kinds import KINDS, CnnParams, ModelKind, Task, params_problem


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumericColumn(Frozen):
    kind: Literal["numeric"] = "numeric"
    # Public bounds (never derived from the data): differential privacy clips to them.
    bounds: tuple[float, float] | None = None
    # False: the bounds were read off the data (`trustflow schema infer`); privacy refuses them
    # until a person confirms they are public knowledge.
    public: bool = True
    # Cut points that group a numeric sensitive feature for the fairness audit: [25, 45, 65]
    # gives the groups <25, 25-45, 45-65 and >=65 (each from its lower edge, below the next).
    bins: tuple[float, ...] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _ordered_bounds(self) -> NumericColumn:
        if self.bounds is not None and self.bounds[0] >= self.bounds[1]:
            raise ValueError(
                f"bounds {list(self.bounds)} must be [lower, upper] with lower < upper"
            )
        if self.bins is not None and list(self.bins) != sorted(set(self.bins)):
            raise ValueError(f"bins {list(self.bins)} must be strictly increasing")
        return self


class CategoricalColumn(Frozen):
    kind: Literal["categorical"] = "categorical"
    categories: tuple[str, ...] = Field(min_length=1)
    public: bool = True  # False: the categories were read off the data (as for NumericColumn)


Column = Annotated[NumericColumn | CategoricalColumn, Field(discriminator="kind")]


class TargetSpec(Frozen):
    column: str
    # binary: two categories, one of them ``positive``; multiclass: three or more, no positive;
    # regression: a numeric column.
    task: Task = "binary"
    positive: str | None = None  # binary: the label value counted as the positive class


class DatasetSchema(Frozen):
    """The contract the rest of the pipeline relies on."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    # The registered model's name when registry.model_name is not set; unset: ``name``.
    model_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")
    columns: dict[str, Column]
    target: TargetSpec
    sensitive_features: tuple[str, ...] = ()
    missing_values: tuple[str, ...] = ("?", "")
    # A numeric value outside its column's bounds: refuse the data, or clip it to the bound
    # (the validation report counts them).
    out_of_bounds: Literal["refuse", "clip"] = "refuse"
    # Columns of the source the pipeline drops on reading; a column in neither list is refused,
    # unless extra_columns is drop.
    ignore: tuple[str, ...] = ()
    extra_columns: Literal["refuse", "drop"] = "refuse"

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSchema:
        target = self.columns.get(self.target.column)
        if self.target.task == "regression":
            if not isinstance(target, NumericColumn) or self.target.positive is not None:
                raise ValueError(
                    f"target '{self.target.column}' (task: regression) must be a numeric column "
                    "with no positive class"
                )
            return self._consistent_features()
        if not isinstance(target, CategoricalColumn):
            raise ValueError(
                f"target '{self.target.column}' (task: {self.target.task}) must be a categorical "
                "column; a numeric target to predict is task: regression"
            )
        categories = list(target.categories)
        if self.target.task == "binary" and (
            len(categories) != 2 or self.target.positive not in categories
        ):
            raise ValueError(
                f"target '{self.target.column}' (task: binary) needs exactly two categories "
                f"including positive {self.target.positive!r}, got {categories}"
                + ("; for more, set target.task: multiclass" if len(categories) > 2 else "")
            )
        if self.target.task == "multiclass" and (
            len(categories) < 3 or self.target.positive is not None
        ):
            raise ValueError(
                f"target '{self.target.column}' (task: multiclass) needs three or more "
                f"categories and no positive class, got {categories}"
                + (f" and positive {self.target.positive!r}" if self.target.positive else "")
            )
        return self._consistent_features()

    def _consistent_features(self) -> DatasetSchema:
        for feature in self.sensitive_features:
            if feature not in self.columns:
                raise ValueError(f"sensitive feature '{feature}' is not a column of the schema")
        both = sorted(set(self.ignore) & set(self.columns))
        if both:
            raise ValueError(f"{both} are both columns and in ignore")
        return self

    @property
    def target_labels(self) -> tuple[str, ...]:
        """The target's labels in the order of its encoding 0, 1, ...: (negative, positive) for
        a binary target, the schema's categories for a multiclass one, none for regression."""
        target = self.columns[self.target.column]
        if self.target.task == "regression":
            return ()
        assert isinstance(target, CategoricalColumn)  # checked by _consistent
        if self.target.task == "multiclass":
            return target.categories
        negative = next(c for c in target.categories if c != self.target.positive)
        return negative, str(self.target.positive)

    @property
    def classification(self) -> bool:
        """A class to predict (binary or multiclass), not a number."""
        return self.target.task != "regression"

    @property
    def feature_columns(self) -> list[str]:
        return [c for c in self.columns if c != self.target.column]

    @property
    def numeric_features(self) -> list[str]:
        return [c for c in self.feature_columns if isinstance(self.columns[c], NumericColumn)]

    @property
    def categorical_features(self) -> list[str]:
        return [c for c in self.feature_columns if isinstance(self.columns[c], CategoricalColumn)]


def _yaml(text: str, where: str) -> Any:
    """Parsed YAML, or one line naming the place (line, column) and the problem."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise ConfigError(f"{where} is not valid YAML{at}: {problem}") from None


def load_schema(reference: str) -> DatasetSchema:
    """``bundled:<name>`` for a schema shipped with a bundled data set, otherwise a YAML path."""
    if reference.startswith("bundled:"):
        name = reference.removeprefix("bundled:")
        resource = resources.files("trustflow.datasets").joinpath(name, "schema.yaml")
        if not resource.is_file():
            raise ConfigError(
                f"no bundled data set named '{name}' (schema reference '{reference}')"
            )
        text = resource.read_text(encoding="utf-8")
    else:
        path = Path(reference)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read schema file {path}: {exc.strerror}") from exc
    try:
        return DatasetSchema.model_validate(_yaml(text, f"schema {reference}"))
    except ValidationError as exc:
        raise ConfigError(f"schema {reference}: {_first_error(exc)}") from exc


class DataConfig(Frozen):
    # bundled:adult | csv:<path> | parquet:<path> | openml:<name-or-id>
    source: str = "bundled:adult"
    # A schema inline, or a reference: bundled:<name> or a YAML path.
    dataset: DatasetSchema = Field(default_factory=lambda: load_schema("bundled:adult"))
    # Rows with a missing feature value: drop them, or keep them for the model's imputer.
    missing: Literal["drop", "impute"] = "drop"
    # Any DVC remote URL; empty means a local remote inside the workspace.
    remote_url: str | None = None
    # Text encoding of a CSV source.
    encoding: str = "utf-8"

    @field_validator("dataset", mode="before")
    @classmethod
    def _resolve_reference(cls, value: Any) -> Any:
        return load_schema(value) if isinstance(value, str) else value


class SplitConfig(Frozen):
    test_size: float = Field(default=0.2, gt=0, lt=1)
    valid_size: float = Field(default=0.1, ge=0, lt=1)
    seed: int = 42

    @model_validator(mode="after")
    def _room_to_train(self) -> SplitConfig:
        if self.test_size + self.valid_size >= 0.9:
            raise ValueError("test_size + valid_size must leave at least 10% of rows to train on")
        return self


class CandidateConfig(Frozen):
    name: str = Field(pattern=r"^[a-z0-9_-]+$")
    # One of trustflow.models.kinds.KINDS (the Prefect UI offers them as a list).
    kind: str = Field(json_schema_extra={"enum": list(KINDS)})
    # Checked against the kind's params model when the config loads; kept as written, so the
    # library's defaults apply to what is not set.
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_kind_and_params(self) -> CandidateConfig:
        if self.kind not in KINDS:
            raise ValueError(
                f"candidate '{self.name}': unknown kind '{self.kind}'; known kinds: "
                + ", ".join(KINDS)
            )
        problem = params_problem(KINDS[self.kind], self.params)
        if problem is not None:
            raise ValueError(f"candidate '{self.name}' ({self.kind}): {problem}")
        return self

    @property
    def model_kind(self) -> ModelKind:
        return KINDS[self.kind]

    @property
    def base(self) -> str | None:
        """The candidate a mitigation post-processes."""
        return self.params.get("base") if self.model_kind.mitigation else None


class TrainerConfig(Frozen):
    """PyTorch Lightning, for the network candidates."""

    # auto: CUDA when a GPU is visible, else the CPU. cuda: a GPU or a config error (no fallback).
    accelerator: Literal["auto", "cpu", "cuda"] = "auto"
    tensorboard: bool = True  # event files under <workspace>/tensorboard/<candidate>/
    warm_start: bool = True  # start from the champion's weights when it is the same network


class RunnerConfig(Frozen):
    # Prefect task runner for the concurrent candidates.
    kind: Literal["thread"] = "thread"
    max_workers: int = Field(default=2, ge=1)


def _default_candidates() -> tuple[CandidateConfig, ...]:
    return (
        CandidateConfig(name="logreg", kind="logistic_regression", params={"C": 1.0}),
        CandidateConfig(
            name="hgb",
            kind="hist_gradient_boosting",
            params={"learning_rate": 0.1, "max_iter": 200, "max_leaf_nodes": 31},
        ),
        CandidateConfig(
            name="ebm",
            kind="explainable_boosting",
            params={"outer_bags": 2, "interactions": 3, "learning_rate": 0.05},
        ),
        CandidateConfig(
            name="hgb-fair",
            kind="threshold_optimizer",
            params={"base": "hgb", "sensitive_feature": "sex", "constraints": "equalized_odds"},
        ),
        CandidateConfig(name="mlp", kind="mlp", params={"hidden": [128, 64]}),
    )


def _dp_candidates() -> list[dict[str, Any]]:
    """The default candidates of privacy.mode: training: the kinds DP-SGD trains, with large
    Poisson batches and few epochs (every step adds noise)."""
    return [
        {"name": "dp-logreg", "kind": "dp_logistic_regression"},
        {
            "name": "mlp",
            "kind": "mlp",
            "params": {"hidden": [128, 64], "batch_size": 2048, "learning_rate": 4e-3,
                       "max_epochs": 10},
        },
    ]  # fmt: skip


def _regression_candidates() -> list[dict[str, Any]]:
    """The default candidates for a regression target (left out when it is not: they are
    only the default list of one)."""
    return [
        {"name": "ridge", "kind": "ridge", "params": {"alpha": 1.0}},
        {"name": "hgb", "kind": "hist_gradient_boosting",
         "params": {"learning_rate": 0.1, "max_iter": 200, "max_leaf_nodes": 31}},
        # No pair terms: ebm2onnx cannot convert a regression EBM that has them.
        {"name": "ebm", "kind": "explainable_boosting",
         "params": {"outer_bags": 2, "interactions": 0, "learning_rate": 0.05}},
        {"name": "mlp", "kind": "mlp", "params": {"hidden": [128, 64]}},
    ]  # fmt: skip


class TrainConfig(Frozen):
    candidates: tuple[CandidateConfig, ...] = Field(
        default_factory=_default_candidates, min_length=1
    )
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    seed: int = 42

    @model_validator(mode="after")
    def _unique_names(self) -> TrainConfig:
        names = [c.name for c in self.candidates]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"candidate names must be unique, repeated: {duplicated}")
        bases = {c.name: c for c in self.candidates if not c.model_kind.mitigation}
        for candidate in self.candidates:
            if candidate.model_kind.mitigation and candidate.base not in bases:
                raise ValueError(
                    f"candidate '{candidate.name}' ({candidate.kind}) needs params.base naming "
                    f"one of the other candidates {sorted(bases)}, got {candidate.base!r}"
                )
        return self


Metric = Literal["roc_auc", "accuracy", "f1", "log_loss", "rmse", "mae", "r2"]
CLASSIFICATION_METRICS = ("roc_auc", "accuracy", "f1", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")


class RegistryConfig(Frozen):
    # train-tabular: unset (null) means the data set's own name (see TabularConfig).
    model_name: str = "adult-income"
    alias: str = "champion"
    metric: Metric = "roc_auc"
    # A challenger must beat the champion by more than this to take the alias.
    min_improvement: float = Field(default=0.0, ge=0)
    # OWNER/REPO: when the alias moves to a new version, send that GitHub repository a
    # champion-changed repository_dispatch (its release workflow deploys the model). The token
    # comes from GITHUB_TOKEN; a run without one stops before any work.
    announce_to: str | None = Field(default=None, pattern=r"^[\w.-]+/[\w.-]+$")


class OnnxConfig(Frozen):
    """ONNX export and the parity gate a model must pass before it may be promoted."""

    opset: int = Field(default=17, ge=13)
    max_abs_diff: float = Field(default=1e-4, gt=0)  # max |p_native - p_onnx| on the test split
    min_label_agreement: float = Field(default=0.999, gt=0, le=1)
    # A regressor's values may also differ by this fraction of the value (float32 trees).
    value_rtol: float = Field(default=1e-5, ge=0)


Fraction = Annotated[float, Field(ge=0, le=1)]


class EncryptionConfig(Frozen):
    """Encrypted inference (docs/encrypted.md). When enabled, the best linear-headed candidate
    is also registered as ``<registry.model_name>-linear``, with its own alias, after the
    encryption parity gate: ``rows`` test rows scored encrypted and in plaintext."""

    enabled: bool = False
    rows: int = Field(default=1000, ge=1)
    max_abs_diff: float = Field(default=1e-3, gt=0)  # max |p_encrypted - p_plain|
    min_label_agreement: Fraction = 1.0


class FairnessConfig(Frozen):
    """The fairness audit (every candidate, on the test split) and the gate before promotion."""

    # The sensitive features to audit; None means the data set schema's ``sensitive_features``.
    features: tuple[str, ...] | None = None
    # The combination of all features (e.g. sex & race): audited and reported, or gated by the
    # same limits too (its groups are small, so its gaps are the noisiest), or left out.
    intersection: Literal["report", "gate", "off"] = "report"
    # Groups with fewer test rows are reported but left out of the disparity metrics: a handful
    # of rows gives rates too noisy to gate on.
    min_group_rows: int = Field(default=100, ge=1)
    # Limits on the disparity between groups; None turns a limit off.
    max_equalized_odds_difference: Fraction | None = 0.2
    max_demographic_parity_difference: Fraction | None = None
    # A regression target's: the worst measured group's mean absolute error over the best
    # group's, and (Fairlearn's bounded group loss) every measured group's MAE, in the target's
    # units (so off unless set).
    max_mae_ratio: float | None = Field(default=1.25, ge=1)
    max_group_mae: float | None = Field(default=None, gt=0)
    # A gated feature with fewer than two measurable groups cannot show the limits were met:
    # fail the gate, or allow it (the audit still says it was not measured).
    unmeasured: Literal["fail", "allow"] = "fail"


class ExplainConfig(Frozen):
    """Global explanations (InterpretML): every EBM's own, and the best candidate's
    model-agnostic one."""

    rows: int = Field(default=500, ge=10)  # test rows the model-agnostic explainer samples
    top_features: int = Field(default=10, ge=1)  # listed in the model card


class DpTrainingConfig(Frozen):
    """DP-SGD (Opacus) for every candidate in ``privacy.mode: training``: each network trained
    is a release of ε at δ, recorded in the ledger before its first step."""

    epsilon: float = Field(default=1.0, gt=0)  # per candidate trained
    # The accountants give (ε, δ)-DP with δ > 0; it must also be below 1/n (checked on the rows).
    delta: float = Field(default=1e-5, gt=0, lt=1)
    max_grad_norm: float = Field(default=1.0, gt=0)  # per-sample clipping norm C
    accountant: Literal["prv", "rdp"] = "prv"


class SyntheticConfig(Frozen):
    """SmartNoise's MST synthesizer in ``privacy.mode: synthetic``: one (ε, δ)-DP synthetic copy
    of the training split, on which every candidate trains. It runs in its own environment
    (``make synth``: smartnoise-synth cannot share the project's opendp, pandas and Opacus)."""

    # mst: Maximum Spanning Tree (McKenna et al., 2021), minutes on Adult. aim: Adaptive and
    # Iterative Mechanism (McKenna et al., 2022), often better, much slower (it did not finish
    # Adult in 300 s here): give it a time budget.
    synthesizer: Literal["mst", "aim"] = "mst"
    epsilon: float = Field(default=1.0, gt=0)
    delta: float = Field(default=1e-9, gt=0, lt=1)  # below 1/n (checked on the rows)
    bins: int = Field(default=16, ge=2)  # each numeric column, cut on its public bounds
    # Past this the synthesizer is stopped and nothing is recorded or spent (its noise was never
    # released).
    max_seconds: float = Field(default=900, gt=0)
    # The environment's interpreter; null: $TRUSTFLOW_SYNTH_PYTHON, else .venv-synth next to
    # this environment.
    python: str | None = None


class PrivacyConfig(Frozen):
    """Differentially private preprocessing (OpenDP) and the privacy budget it spends.

    ``mode: preprocessing`` fits the shared preprocessor's statistics (numeric means and
    variances within the schema's public bounds, category counts) under differential privacy.
    Only those statistics are protected: the models themselves train on the raw rows and are not
    differentially private. ``mode: training`` also trains every candidate by DP-SGD
    (``training``), so the released pipeline is DP. ``mode: synthetic`` trains every candidate
    on a DP synthetic copy of the training split (``synthetic``) instead of the real rows.
    ``epsilon`` is the preprocessing release's
    ε, split evenly over its statistics; ``budget`` is the total ε the ledger allows per data set
    version (its md5).
    """

    mode: Literal["off", "preprocessing", "training", "synthetic"] = "off"
    epsilon: float = Field(default=1.0, gt=0)
    # pure: Laplace noise, ε-DP (delta must be 0). zcdp: Gaussian noise, ρ-zCDP composed over the
    # statistics and reported as (ε, δ)-DP with this delta.
    accounting: Literal["pure", "zcdp"] = "pure"
    delta: float = Field(default=0.0, ge=0, lt=1)
    budget: float = Field(default=3.0, gt=0)
    # A category is kept when its noisy count reaches this; the rest share the encoder's
    # all-zeros "infrequent" code (as unknown values do).
    min_category_count: float = Field(default=20.0, ge=0)
    # How ε is split: every statistic weighs 1 (even split) unless its column is listed here,
    # e.g. {fnlwgt: 0.5, native_country: 2}. The release records each statistic's share.
    column_weights: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    # A label for the release. Identical rows, settings and label reuse the recorded release
    # (no new spend); a new label draws fresh noise and spends ε again. OpenDP's noise cannot be
    # seeded, so reruns are reproducible through reuse, not through a seed.
    release: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]+$")
    # The ledger of releases; null = <workspace>/.trustflow/privacy-ledger.json.
    ledger: str | None = None
    # A privacy-utility plot (benchmarks/privacy_utility.py writes one) to log with the run;
    # its .json numbers next to it are logged too.
    utility_report: str | None = None
    training: DpTrainingConfig = Field(default_factory=DpTrainingConfig)
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)

    @model_validator(mode="after")
    def _delta_matches_accounting(self) -> PrivacyConfig:
        if self.accounting == "pure" and self.delta != 0:
            raise ValueError(
                f"privacy.delta = {self.delta} needs privacy.accounting: zcdp (pure ε-DP has δ = 0)"
            )
        if self.accounting == "zcdp" and not 0 < self.delta < 1:
            raise ValueError("privacy.accounting: zcdp needs 0 < privacy.delta < 1")
        if self.mode != "off" and self.epsilon > self.budget:
            raise ValueError(
                f"privacy.epsilon = {self.epsilon:g} exceeds privacy.budget = {self.budget:g}"
            )
        return self


class TrackingConfig(Frozen):
    experiment: str  # the MLflow experiment of the pipeline's runs


def _defaults_from_the_data(tree: Any) -> Any:
    """Unset (or null) ``registry.model_name`` is the schema's ``model_name``, else its
    ``name``; unset ``tracking.experiment`` is that model name. So a run on another data set
    registers and tracks under that data set's name, never as adult-income. A regression
    target also changes the unset ``registry.metric`` (rmse) and ``train.candidates`` (the
    regressors)."""
    if not isinstance(tree, dict):
        return tree
    tree = dict(tree)
    registry, tracking, train = (tree.get(key) or {} for key in ("registry", "tracking", "train"))
    registry, tracking, train = (
        section.model_dump() if isinstance(section, BaseModel) else section
        for section in (registry, tracking, train)
    )
    if not all(isinstance(section, dict) for section in (registry, tracking, train)):
        return tree  # the field's own validation says what is wrong
    data = tree.get("data") or {}
    if isinstance(data, DataConfig):
        schema = data.dataset
    else:
        try:
            schema = DataConfig(dataset=data.get("dataset", "bundled:adult")).dataset
        except (ValidationError, ConfigError, AttributeError):
            return tree  # the data field's own validation reports it, in its own words
        tree["data"] = {**data, "dataset": schema}  # read once, not again by the field
    name = registry.get("model_name")
    if name is None:
        name = schema.model_name or schema.name
        tree["registry"] = registry = {**registry, "model_name": name}
    if tracking.get("experiment") is None:
        tree["tracking"] = {**tracking, "experiment": name}
    privacy = tree.get("privacy") or {}
    mode = privacy.mode if isinstance(privacy, PrivacyConfig) else privacy.get("mode")
    if mode == "training" and train.get("candidates") is None:
        tree["train"] = train = {**train, "candidates": _dp_candidates()}
    if schema.target.task == "regression":
        if registry.get("metric") is None:
            tree["registry"] = {**registry, "metric": "rmse"}
        if train.get("candidates") is None:
            tree["train"] = {**train, "candidates": _regression_candidates()}
    return tree


class TabularConfig(Frozen):
    data: DataConfig = Field(default_factory=DataConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    onnx: OnnxConfig = Field(default_factory=OnnxConfig)
    fairness: FairnessConfig = Field(default_factory=FairnessConfig)
    explain: ExplainConfig = Field(default_factory=ExplainConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    tracking: TrackingConfig = Field(
        default_factory=lambda fields: TrackingConfig(experiment=fields["registry"].model_name)
    )
    encryption: EncryptionConfig = Field(default_factory=EncryptionConfig)

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_the_data(cls, tree: Any) -> Any:
        return _defaults_from_the_data(tree)

    @model_validator(mode="after")
    def _something_to_train(self) -> TabularConfig:
        if not self.candidates:
            task = self.data.dataset.target.task
            raise ValueError(
                f"no candidate of train.candidates can learn a {task} target: "
                + "; ".join(self.left_out.values())
            )
        return self

    @model_validator(mode="after")
    def _privacy_mode_suits_the_candidates(self) -> TabularConfig:
        privacy = self.privacy
        if privacy.mode != "training":
            only = [c for c in self.train.candidates if c.model_kind.dp_sgd == "only"]
            if only:
                raise ValueError(
                    "; ".join(f"candidate '{c.name}' ({c.kind})" for c in only)
                    + " trains only with privacy.mode: training (DP-SGD), not "
                    + f"{privacy.mode!r}"
                )
        if privacy.mode == "synthetic" and privacy.synthetic.epsilon > privacy.budget + 1e-9:
            raise ValueError(
                f"privacy.budget = {privacy.budget:g} is too small for the synthetic copy "
                f"(privacy.synthetic.epsilon = {privacy.synthetic.epsilon:g})"
            )
        if privacy.mode != "training":
            return self
        never = [c for c in self.train.candidates if c.model_kind.dp_sgd == "never"]
        if never:
            dp_kinds = ", ".join(k.name for k in KINDS.values() if k.dp_sgd != "never")
            raise ValueError(
                "privacy.mode: training trains every candidate by DP-SGD; "
                + ", ".join(f"'{c.name}' ({c.kind})" for c in never)
                + f" cannot be trained that way (DP-SGD kinds: {dp_kinds})"
            )
        wanted = privacy.epsilon + len(self.candidates) * privacy.training.epsilon
        if wanted > privacy.budget + 1e-9:
            raise ValueError(
                f"privacy.budget = {privacy.budget:g} is too small for one run: the "
                f"preprocessing release (ε = {privacy.epsilon:g}) and {len(self.candidates)} "
                f"DP-SGD candidates at ε = {privacy.training.epsilon:g} each need ε = "
                f"{wanted:g}"
            )
        return self

    @model_validator(mode="after")
    def _metric_suits_the_task(self) -> TabularConfig:
        schema, metric = self.data.dataset, self.registry.metric
        suited = CLASSIFICATION_METRICS if schema.classification else REGRESSION_METRICS
        if metric not in suited:
            raise ValueError(
                f"registry.metric {metric} does not suit data set '{schema.name}' "
                f"(task: {schema.target.task}); use one of {', '.join(suited)}"
            )
        return self

    @property
    def candidates(self) -> tuple[CandidateConfig, ...]:
        """What the run trains: ``train.candidates`` less those it leaves out (``left_out``)."""
        left_out = self.left_out
        return tuple(c for c in self.train.candidates if c.name not in left_out)

    @property
    def left_out(self) -> dict[str, str]:
        """The candidates this data set cannot use, each with one line saying why: a kind that
        cannot learn the target's task, a mitigation of a sensitive feature the schema lacks, or
        a mitigation of a candidate left out. So the default list runs on any table."""
        schema = self.data.dataset
        task = schema.target.task
        why: dict[str, str] = {}
        for c in self.train.candidates:
            mitigated = c.params.get("sensitive_feature")
            if task not in c.model_kind.tasks:
                why[c.name] = f"{c.kind} cannot learn a {task} target"
            elif c.model_kind.mitigation and mitigated not in schema.columns:
                why[c.name] = (
                    f"its sensitive feature {mitigated!r} is not a column of data set "
                    f"'{schema.name}'"
                )
        for c in self.train.candidates:  # a base is never a mitigation: one more pass will do
            if c.name not in why and c.base in why:
                why[c.name] = f"the candidate it post-processes, '{c.base}', is left out"
        return {name: f"candidate '{name}' left out: {reason}" for name, reason in why.items()}

    @property
    def notes(self) -> list[str]:
        """What this data set changes in the run, one line each (the run's summary shows them):
        the candidates left out, and a fairness audit with nothing to audit."""
        notes = list(self.left_out.values())
        if not self.sensitive_features:
            notes.append(
                f"no fairness audit: data set '{self.data.dataset.name}' declares no sensitive "
                "feature and fairness.features is not set"
            )
        return notes

    @model_validator(mode="after")
    def _encryption_has_a_linear_candidate(self) -> TabularConfig:
        task = self.data.dataset.target.task
        if self.encryption.enabled and task != "binary":
            raise ValueError(
                "encryption.enabled serves a binary target's linear model (one sigmoid); data "
                f"set '{self.data.dataset.name}' is {task}"
            )
        if self.encryption.enabled and not any(c.model_kind.linear_head for c in self.candidates):
            kinds = ", ".join(sorted(k.name for k in KINDS.values() if k.linear_head))
            raise ValueError(
                "encryption.enabled needs a linear-headed candidate in train.candidates "
                f"(kinds: {kinds}); there is none"
            )
        return self

    @model_validator(mode="after")
    def _sensitive_features_exist(self) -> TabularConfig:
        schema = self.data.dataset
        for feature in self.sensitive_features:
            spec = schema.columns.get(feature)
            if feature == schema.target.column or spec is None:
                raise ValueError(
                    f"fairness feature '{feature}' is not a feature column of data set "
                    f"'{schema.name}'"
                )
            if isinstance(spec, NumericColumn) and spec.bins is None:
                raise ValueError(
                    f"fairness feature '{feature}' is numeric; give it bins in the schema "
                    "(e.g. bins: [25, 45, 65]) to audit it by group"
                )
        for candidate in self.candidates:
            mitigation = candidate.model_kind.mitigation
            if mitigation and self.split.valid_size == 0:
                raise ValueError(
                    f"candidate '{candidate.name}' ({candidate.kind}) is fitted on the "
                    "validation split; split.valid_size must be above 0"
                )
            mitigated = candidate.params.get("sensitive_feature")
            if mitigation and mitigated not in self.sensitive_features:
                audited = list(self.sensitive_features) or (
                    f"none: data set '{schema.name}' declares no sensitive_features and "
                    "fairness.features is not set"
                )
                raise ValueError(
                    f"candidate '{candidate.name}' ({candidate.kind}) needs "
                    f"params.sensitive_feature naming an audited feature ({audited}), "
                    f"got {mitigated!r}"
                )
            if mitigation and isinstance(schema.columns.get(str(mitigated)), NumericColumn):
                raise ValueError(
                    f"candidate '{candidate.name}' ({candidate.kind}) reads its sensitive "
                    f"feature at scoring time; '{mitigated}' is numeric, so name a categorical one"
                )
        return self

    @model_validator(mode="after")
    def _private_columns_have_bounds(self) -> TabularConfig:
        if self.privacy.mode == "off":
            return self
        schema = self.data.dataset
        unknown = sorted(set(self.privacy.column_weights) - set(schema.feature_columns))
        if unknown:
            raise ValueError(
                f"privacy.column_weights: {unknown} are not feature columns of '{schema.name}'"
            )
        unbounded = [
            name
            for name in schema.numeric_features
            if isinstance(spec := schema.columns[name], NumericColumn) and spec.bounds is None
        ]
        if unbounded:
            raise ValueError(
                f"privacy.mode = {self.privacy.mode} needs public bounds for every numeric "
                f"column; data set '{schema.name}' declares none for {unbounded}"
            )
        from_data = [name for name in schema.feature_columns if not schema.columns[name].public]
        if from_data:
            raise ValueError(
                f"privacy.mode = {self.privacy.mode} needs public bounds and categories; data "
                f"set '{schema.name}' took those of {from_data} from the data (public: false). "
                "Set public: true on each once you have confirmed they are public knowledge"
            )
        return self

    @property
    def sensitive_features(self) -> tuple[str, ...]:
        """The features the fairness audit groups by."""
        if self.fairness.features is not None:
            return self.fairness.features
        return self.data.dataset.sensitive_features


def lower_is_better(metric: Metric) -> bool:
    return metric in ("log_loss", "rmse", "mae")


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    message = str(err["msg"]).removeprefix("Value error, ")  # our validators' own sentences
    return f"{where}: {message}" if where else message


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value); the value is read as YAML (numbers, lists, null)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got '{text}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value '{raw}' is not valid YAML") from exc
    if isinstance(value, dict) and not raw.strip().startswith("{"):
        value = raw.strip()  # `csv:` or `csv: x` is a source spec, not a mapping
    return key.strip().split("."), value


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        below = merged.get(key)
        both = isinstance(value, dict) and isinstance(below, dict)
        merged[key] = _merged(below, value) if both else value  # type: ignore[arg-type]
    return merged


def _task_candidates(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """The tree with its data set's own default candidates (a regression's) when it lists none,
    so that ``--set train.candidates.NAME...`` and ``--candidates`` reach that list, not the
    built-in classifiers. The data set is the one after the ``data.`` overrides."""
    train = tree.get("train") or {}
    if not isinstance(train, dict) or "candidates" in train:
        return tree
    data_overrides = [o for o in overrides if o.partition("=")[0].strip().startswith("data.")]
    probe = _defaults_from_the_data(apply_overrides(copy.deepcopy(tree), data_overrides))
    listed = ((probe.get("train") or {}) if isinstance(probe, dict) else {}).get("candidates")
    return tree if listed is None else {**tree, "train": {**train, "candidates": listed}}


def _only_candidates(tree: dict[str, Any], names: list[str], defaults: BaseModel) -> dict[str, Any]:
    """``train.candidates`` (the tree's, else the pipeline's default list) narrowed to
    ``names``, in the list's own order; a name the list lacks is an error naming the known."""
    train = tree.get("train") or {}
    listed = train.get("candidates") if isinstance(train, dict) else None
    if listed is None:
        default = getattr(getattr(defaults, "train", None), "candidates", None)
        if default is None:
            raise ConfigError("--candidates: this pipeline has no train.candidates to choose from")
        listed = [c.model_dump(mode="json", exclude_defaults=True) for c in default]
    known = [c.get("name") for c in listed if isinstance(c, dict)]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ConfigError(
            f"--candidates: no candidate named {', '.join(map(repr, unknown)) or 'at all'}; "
            f"train.candidates has {', '.join(map(str, known))}"
        )
    kept = [c for c in listed if isinstance(c, dict) and c.get("name") in names]
    return {**tree, "train": {**train, "candidates": kept}}


def _over_pipeline_defaults(kind: type[BaseModel], tree: dict[str, Any]) -> dict[str, Any]:
    """A section the pipeline gives defaults of its own (train-digits' registry: digits-cnn on
    accuracy) keeps them when a file or ``--set`` changes one of its keys; otherwise
    ``--set registry.model_name=x`` would bring back the section class's defaults (roc_auc)."""
    pipeline = kind()
    merged = dict(tree)
    for name, value in tree.items():
        default = getattr(pipeline, name, None)
        if not isinstance(value, dict) or not isinstance(default, BaseModel):
            continue
        try:
            own = type(default)()
        except ValidationError:
            continue
        if default != own:
            merged[name] = _merged(default.model_dump(mode="json"), value)
    return merged


def _element(items: list[Any] | tuple[Any, ...], part: str, key: str) -> int:
    """A list element by index or, for a list of named entries (train.candidates), by name."""
    if part.isdigit():
        if int(part) >= len(items):
            raise ConfigError(f"--set {key}: index {part} is past the {len(items)} entries")
        return int(part)
    names = [_named(item) for item in items]
    if part not in names:
        known = ", ".join(str(n) for n in names if n is not None) or "none are named"
        raise ConfigError(f"--set {key}: no entry named '{part}' (entries: {known})")
    return names.index(part)


def _named(item: Any) -> Any:
    return item.get("name") if isinstance(item, dict) else getattr(item, "name", None)


def _default_below(default: Any, part: str) -> Any:
    """The built-in value one step down, or None (a config file's own list may name entries
    the built-in one lacks)."""
    if isinstance(default, BaseModel):
        return getattr(default, part, None)
    if isinstance(default, (list, tuple)):
        names = [_named(item) for item in default]
        if part.isdigit():
            return default[int(part)] if int(part) < len(default) else None
        return default[names.index(part)] if part in names else None
    return default.get(part) if isinstance(default, dict) else None


def apply_overrides(
    tree: dict[str, Any], overrides: list[str], defaults: BaseModel | None = None
) -> dict[str, Any]:
    """Set each ``a.b.c=value`` in ``tree``. A list is indexed by position or by an entry's
    name (``train.candidates.hgb.params.max_iter=50``); a list the tree does not have yet is
    first copied from ``defaults``, the pipeline's built-in config."""
    for text in overrides:
        path, value = parse_override(text)
        key = ".".join(path)
        node: Any = tree
        default: Any = defaults
        for part in path[:-1]:
            default = _default_below(default, part)
            if isinstance(node, list):
                child = node[_element(node, part, key)]
            else:
                if part not in node and isinstance(default, (list, tuple)):
                    node[part] = [
                        item.model_dump(mode="json") if isinstance(item, BaseModel) else item
                        for item in default
                    ]
                child = node.setdefault(part, {})
            if not isinstance(child, (dict, list)):
                raise ConfigError(f"--set {key}: '{part}' is not a section")
            node = child
        if isinstance(node, list):
            node[_element(node, path[-1], key)] = value
        else:
            node[path[-1]] = value
    return tree


class NeuralOnnxConfig(Frozen):
    """ONNX export of a network and its parity gate: ONNX Runtime's probabilities must equal
    PyTorch's within ``numpy.allclose(rtol, atol)`` on the whole test split."""

    opset: int = Field(default=17, ge=13)
    rtol: float = Field(default=1e-3, gt=0)
    atol: float = Field(default=1e-5, gt=0)


class DigitsTrainConfig(Frozen):
    seed: int = 42
    # The CNN's hyper-parameters (trustflow.models.kinds.CnnParams), checked when the config
    # loads.
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _cnn_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        CnnParams.model_validate(params)
        return params


class DigitsModelConfig(Frozen):
    # The CNN's framework: the same architecture, params and gates either way; both register as
    # the same model, so they compete for the alias on the registry metric.
    framework: Literal["lightning", "keras"] = "lightning"


class DigitsDataConfig(Frozen):
    # Only these digits (a task of its own, e.g. [5, 6, 7, 8, 9]); null: all ten.
    classes: list[int] | None = None
    # The share of the training split's images whose labels are used (little labelled data).
    label_fraction: float = Field(default=1.0, gt=0, le=1)

    @field_validator("classes")
    @classmethod
    def _digits(cls, classes: list[int] | None) -> list[int] | None:
        if classes is not None and (
            len(classes) < 2
            or len(set(classes)) != len(classes)
            or not set(classes) <= set(range(10))
        ):
            raise ValueError(f"data.classes = {classes}: two or more distinct digits, 0 to 9")
        return classes


class TransferConfig(Frozen):
    # models:/NAME/VERSION or models:/NAME@ALIAS: a Keras digits CNN trained on another task,
    # whose backbone (every layer but the output) this run starts from; null: no transfer.
    source: str | None = None
    freeze_epochs: int = Field(default=5, ge=0)  # the backbone stays frozen this many epochs


def _digits_split() -> SplitConfig:
    return SplitConfig(test_size=0.2, valid_size=0.1, seed=42)


def _digits_registry() -> RegistryConfig:
    return RegistryConfig(model_name="digits-cnn", metric="accuracy")


class DigitsConfig(Frozen):
    """train-digits: a small CNN on scikit-learn's bundled 8x8 handwritten digits."""

    data: DigitsDataConfig = Field(default_factory=DigitsDataConfig)
    split: SplitConfig = Field(default_factory=_digits_split)
    model: DigitsModelConfig = Field(default_factory=DigitsModelConfig)
    train: DigitsTrainConfig = Field(default_factory=DigitsTrainConfig)
    transfer: TransferConfig = Field(default_factory=TransferConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    registry: RegistryConfig = Field(default_factory=_digits_registry)
    onnx: NeuralOnnxConfig = Field(default_factory=NeuralOnnxConfig)
    tracking: TrackingConfig = Field(
        default_factory=lambda: TrackingConfig(experiment="train-digits")
    )
    remote_url: str | None = None  # DVC remote; null = <workspace>/.trustflow/dvc-remote

    @model_validator(mode="after")
    def _multiclass_metric(self) -> DigitsConfig:
        if self.registry.metric not in ("accuracy", "log_loss"):
            raise ValueError(
                f"registry.metric = {self.registry.metric}: ten classes are compared on "
                "accuracy or log_loss"
            )
        if self.split.valid_size == 0:
            raise ValueError("split.valid_size must be above 0: early stopping needs it")
        if self.transfer.source is not None and self.model.framework != "keras":
            raise ValueError(
                f"transfer.source = {self.transfer.source}: transfer learning freezes Keras "
                "layers; set model.framework=keras"
            )
        return self


PipelineConfig = TypeVar("PipelineConfig", bound=BaseModel)


@overload
def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    candidates: list[str] | None = None,
) -> TabularConfig: ...


@overload
def load_config(
    path: str | Path | None,
    overrides: list[str] | None,
    kind: type[PipelineConfig],
    *,
    candidates: list[str] | None = None,
) -> PipelineConfig: ...


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    kind: type[BaseModel] = TabularConfig,
    *,
    candidates: list[str] | None = None,
) -> BaseModel:
    """Read a YAML config (or the defaults), apply ``--set`` overrides, keep only the named
    ``candidates`` (``--candidates``), validate."""
    tree: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        loaded = _yaml(text, f"config file {path}")
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        tree = loaded or {}
    if kind is TabularConfig:
        tree = _task_candidates(tree, overrides or [])
    tree = _over_pipeline_defaults(kind, apply_overrides(tree, overrides or [], kind()))
    if candidates is not None:
        tree = _only_candidates(tree, candidates, kind())
    try:
        return kind.model_validate(tree)
    except ValidationError as exc:
        origin = f"config {path}" if path else "config"
        raise ConfigError(f"{origin}: {_first_error(exc)}") from exc
