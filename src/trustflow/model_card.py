"""The model card: one Markdown page per registered model version, written from recorded facts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from trustflow.explain import METHOD_NOTES, GlobalExplanation
from trustflow.export.onnx import OnnxReport
from trustflow.fairness import FairnessAudit, fairness_table
from trustflow.privacy.mechanisms import privacy_statement

NO_PRIVACY = privacy_statement(None)


class DataFacts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    md5: str
    rows: int
    dvc_file: str
    remote: str
    git_revision: str | None
    test_rows: int


class ModelCardFacts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str
    version: str
    candidate: str
    kind: str
    target: str
    task: str = "binary"  # the target's task (DatasetSchema target.task)
    labels: tuple[str, ...]  # the target's labels; binary: (negative, positive)
    data: DataFacts
    metrics: dict[str, float]
    selection_metric: str
    fairness: FairnessAudit
    explanation: GlobalExplanation | None
    onnx: OnnxReport | None
    onnx_reason: str
    gates_passed: bool
    gate_reason: str
    privacy: str = NO_PRIVACY
    encryption: str | None = None  # the encryption parity gate's result, when it ran
    failed: dict[str, str] = {}  # candidates that did not train, and why
    left_out: dict[str, str] = {}  # candidates this data set cannot use, and why
    mlflow_run_id: str


def render_model_card(facts: ModelCardFacts, top_features: int = 10) -> str:
    data = facts.data
    lines = [
        f"# Model card: {facts.model_name} v{facts.version}",
        "",
        f"Candidate `{facts.candidate}` ({facts.kind}), MLflow run `{facts.mlflow_run_id}`. "
        f"Gates: **{'passed' if facts.gates_passed else 'FAILED'}**: {facts.gate_reason}.",
        "",
        *(
            ["Candidates that did not train (the others were compared without them):", ""]
            + [f"- {reason}" for reason in facts.failed.values()]
            + [""]
            if facts.failed
            else []
        ),
        *(
            ["Candidates left out for this data set:", ""]
            + [f"- {reason}" for reason in facts.left_out.values()]
            + [""]
            if facts.left_out
            else []
        ),
        "## Intended use",
        "",
        f"{_prediction(facts)} for one record of the "
        f"`{data.name}` data set's features, as a decision aid to be reviewed by a person. It is "
        "not meant for decisions about individuals without human review, nor for populations "
        "unlike the training data (see Limitations).",
        "",
        "## Data lineage",
        "",
        "| | |",
        "|---|---|",
        f"| Data set | {data.name} |",
        f"| md5 | `{data.md5}` |",
        f"| Rows (after validation) | {data.rows:,} |",
        f"| Test rows (audit and metrics) | {data.test_rows:,} |",
        f"| DVC file | `{data.dvc_file}` |",
        f"| DVC remote | `{data.remote}` |",
        f"| Git revision | `{data.git_revision or 'none (workspace is not a git repository)'}` |",
        "",
        "## Metrics (test split)",
        "",
        "| Metric | Value |",
        "|---|---|",
        *[
            f"| {name}{' (selection metric)' if name == facts.selection_metric else ''} "
            f"| {value:.4f} |"
            for name, value in facts.metrics.items()
        ],
        "",
        "## Fairness",
        "",
        *_fairness(facts),
        "",
        "## Top features",
        "",
    ]
    if facts.explanation is None:
        lines.append("No explanation was computed.")
    else:
        lines += [
            METHOD_NOTES[facts.explanation.method]
            + f". Computed on {facts.explanation.rows:,} rows.",
            "",
            "| Rank | Feature | Importance |",
            "|---|---|---|",
            *[
                f"| {rank} | {item.feature} | {item.score:.4f} |"
                for rank, item in enumerate(facts.explanation.top(top_features), start=1)
            ],
        ]
    lines += ["", "## Privacy", "", facts.privacy, "", "## ONNX parity", ""]
    if facts.onnx is None:
        lines.append(f"No ONNX form: {facts.onnx_reason}. This version cannot be deployed.")
    else:
        parity = facts.onnx.parity
        lines.append(
            f"{facts.onnx_reason}. Opset {facts.onnx.opset}, {facts.onnx.size_bytes:,} bytes, "
            f"{parity.rows:,} rows compared, single-row latency "
            f"{facts.onnx.latency_us_single_row:.0f} µs."
        )
    if facts.encryption is not None:
        lines += ["", "## Encrypted inference", "", facts.encryption]
    lines += [
        "",
        "## Limitations",
        "",
        f"- Trained and evaluated on one split of `{data.name}`; metrics and fairness figures "
        "describe that population and period only.",
        "- Fairness is audited only for the sensitive features the data set declares "
        f"({', '.join(facts.fairness.features) or 'none'}); small groups are reported but not "
        "measured, so their disparities are unknown.",
        "- Group metrics are computed on predicted labels at the model's decision threshold; "
        "another threshold changes them."
        if facts.task != "regression"
        else "- Group metrics are mean absolute errors of the predicted values; a group whose "
        "target varies more has larger errors whatever the model.",
        "- Explanations are global and associative: they describe what moves the model's output, "
        "not causes in the world.",
        "",
    ]
    return "\n".join(lines)


def _prediction(facts: ModelCardFacts) -> str:
    if facts.task == "regression":
        return f"Predicts the value of `{facts.target}`"
    if facts.task == "multiclass":
        return (
            f"Predicts which of the {len(facts.labels)} classes of `{facts.target}` "
            f"({', '.join(f'`{label}`' for label in facts.labels)}) holds"
        )
    return f"Predicts whether `{facts.target}` is `{facts.labels[-1]}`"


def _fairness(facts: ModelCardFacts) -> list[str]:
    audit = facts.fairness
    if not audit.features:
        return [
            f"No fairness audit: data set `{facts.data.name}` declares no sensitive feature and "
            "fairness.features is not set, so no limit was checked. Nothing here says this "
            "model treats groups of people alike."
        ]
    one_vs_rest = (
        " For this multiclass target each class is audited one against the rest, and each "
        "feature's row is its worst class."
        if facts.task == "multiclass"
        else ""
    )
    limits = ", ".join(
        f"{name} = {'off' if limit is None else f'{limit:g}'}"
        for name, limit in audit.limits.items()
    )
    return [
        f"Fairlearn audit on {audit.rows:,} test rows; groups with fewer than "
        f"{audit.min_group_rows} rows are listed but not measured. Limits: {limits}." + one_vs_rest,
        "",
        fairness_table(audit),
        "",
        *[f"- {warning}" for warning in audit.warnings],
    ]
