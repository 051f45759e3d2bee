"""Registered versions: by content, with the facts every version records; warm-start
sources."""

from __future__ import annotations

import os
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from tasks.data import Lineage
from tasks.export import ExportedCandidate
from tasks.responsible import AuditedCandidate
from tasks.tracking.models import content_filter, content_tags, logged_model_problem
from tasks.tracking.runs import TrackedRun
from tasks.tracking.store import configure
from tasks.tracking.tags import (
    CANDIDATE_KIND_TAG,
    CI_RUN_URL_TAG,
    DP_SGD_TAG,
    ENVIRONMENT_ARTIFACT,
    ENVIRONMENT_SHA_TAG,
    FAIRNESS_PASSED_TAG,
    FRAMEWORK_TAG,
    GIT_REVISION_TAG,
    PARITY_PASSED_TAG,
)
from tasks.train import EvaluatedCandidate
from trustflow.config import (
    RegistryConfig,
)
from trustflow.environment import Environment, current_environment
from trustflow.errors import ConfigError, IncompleteModel
from trustflow.failpoints import failpoint
from trustflow.models.neural import WarmStart
from trustflow.workspace import Workspace


@task(name="warm-start", cache_policy=NO_CACHE, persist_result=False)
def find_warm_start(
    registry: RegistryConfig, data_md5: str, ws: Workspace, kind: str, private: bool = False
) -> tuple[WarmStart | None, str]:
    """The champion's network weights, when the champion is a network trained on other data;
    else None and why (the network candidates then start from scratch). ``private``
    (privacy.mode: training): a champion not trained by DP-SGD is refused, since its weights
    carry its training rows into the new model."""
    configure(ws)
    client = MlflowClient()
    name, alias = registry.model_name, registry.alias
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None, f"no {name}@{alias} yet: cold start"
    uri = f"models:/{name}/{version.version}"
    if version.tags.get(CANDIDATE_KIND_TAG) != kind:
        candidate = version.tags.get("trustflow.candidate", "?")
        return (
            None,
            f"{name}@{alias} is v{version.version} ({candidate}), not a network: cold start",
        )
    if version.tags.get("trustflow.data.md5") == data_md5:
        return None, f"{uri} was trained on this data version: cold start"
    if private and version.tags.get(DP_SGD_TAG) != "true":
        raise ConfigError(
            f"trainer.warm_start: {name}@{alias} ({uri}) was not trained by DP-SGD; fine-tuning "
            "it in privacy.mode: training would leak its training rows. Set "
            "trainer.warm_start=false"
        )
    model = mlflow.sklearn.load_model(uri)
    network = model.steps[-1][1]
    return network.warm_start(uri), f"fine-tunes from {uri}"


@task(name="transfer", cache_policy=NO_CACHE, persist_result=False)
def find_transfer_source(uri: str, ws: Workspace) -> WarmStart:
    """The network a transfer starts from: ``uri`` (models:/NAME/VERSION or @ALIAS) resolved
    to its version, which must hold a Keras network."""
    configure(ws)
    client = MlflowClient()
    if not uri.startswith("models:/"):
        raise ConfigError(f"transfer.source = {uri}: expected models:/NAME/VERSION or @ALIAS")
    reference = uri.removeprefix("models:/")
    try:
        if "@" in reference:
            name, alias = reference.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, number = reference.rsplit("/", 1)
            version = client.get_model_version(name, number)
    except (MlflowException, ValueError) as exc:
        raise ConfigError(f"transfer.source = {uri}: no such model version") from exc
    resolved = f"models:/{version.name}/{version.version}"
    if version.tags.get(FRAMEWORK_TAG) != "keras":
        framework = version.tags.get(FRAMEWORK_TAG, "unknown")
        raise ConfigError(f"transfer.source = {uri} ({resolved}) is a {framework} model; "
                          "transfer needs a Keras network")  # fmt: skip
    network = mlflow.sklearn.load_model(resolved).steps[-1][1]
    source: WarmStart = network.warm_start(resolved)
    return source


class VersionFacts(BaseModel):
    """What every registered version records, whatever the pipeline: where it came from, its
    gates' verdicts and its held-out metrics (the model card and the server read them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    candidate: str
    kind: str
    framework: str  # the kind's framework (scikit-learn, lightning, keras...)
    run_id: str  # the pipeline's run: its seen rows, config and lineage
    lineage: Lineage
    parity_passed: bool
    parity: str
    fairness_passed: bool
    fairness: str
    metrics: dict[str, float]
    extra_tags: dict[str, str] = Field(default_factory=dict)  # what one pipeline adds
    environment: Environment = Field(default_factory=lambda: current_environment(os.environ))

    def tags(self) -> dict[str, str]:
        ci = {CI_RUN_URL_TAG: self.environment.ci_run_url} if self.environment.ci_run_url else {}
        return {
            "trustflow.candidate": self.candidate,
            CANDIDATE_KIND_TAG: self.kind,
            FRAMEWORK_TAG: self.framework,
            "trustflow.run_id": self.run_id,
            "trustflow.data.md5": self.lineage.data.md5,
            GIT_REVISION_TAG: self.lineage.git_revision or "unknown",
            PARITY_PASSED_TAG: str(self.parity_passed).lower(),
            "trustflow.onnx.parity": self.parity,
            FAIRNESS_PASSED_TAG: str(self.fairness_passed).lower(),
            "trustflow.fairness": self.fairness[:5000],
            **{f"trustflow.metric.{k}": f"{v:.6f}" for k, v in self.metrics.items()},
            ENVIRONMENT_SHA_TAG: self.environment.sha256,
            "trustflow.environment.python": self.environment.python,
            **ci,
            **self.extra_tags,
        }


@task(name="register", cache_policy=NO_CACHE, persist_result=False)
def register_best(
    run: TrackedRun,
    best: EvaluatedCandidate,
    export: ExportedCandidate,
    audited: AuditedCandidate,
    lineage: Lineage,
    registry: RegistryConfig,
) -> tuple[str, bool]:
    """Register the best candidate as a version of ``registry.model_name``; a version with the
    same content (native and ONNX hashes) is reused instead of duplicated."""
    return register_version(
        registry.model_name,
        content_tags(best.candidate.model.sha256, export),
        run.model_uris[best.candidate.name],
        run.candidate_runs[best.candidate.name],
        VersionFacts(
            candidate=best.candidate.name,
            kind=best.candidate.config.kind,
            framework=best.candidate.config.model_kind.framework,
            run_id=run.run_id,
            lineage=lineage,
            parity_passed=export.passed,
            parity=export.reason(),
            fairness_passed=audited.audit.passed,
            fairness=audited.audit.reason(),
            metrics=best.evaluation.metrics.values(),
            extra_tags=(
                {DP_SGD_TAG: "true", "trustflow.privacy.dp_sgd_release": best.candidate.dp_release}
                if best.candidate.dp_release
                else {}
            ),
        ),
    )


def version_model_id(version: Any) -> str | None:
    """The logged model a registered version points at (its source is ``models:/<model id>``;
    the SQL registry leaves ``model_id`` itself empty)."""
    source = str(version.source or "")
    return version.model_id or (
        source.removeprefix("models:/") if source.startswith("models:/") else None
    )


def register_version(
    name: str, content: dict[str, str], model_uri: str, run_id: str, facts: VersionFacts
) -> tuple[str, bool]:
    """A new version of ``name`` for the logged model ``model_uri``, or the existing version with
    the same content tags (native and ONNX hashes) whose model is whole; (version, whether it is
    new). A model that is not whole is never registered."""
    client = MlflowClient()
    earlier = _first_whole_version(client, name, content)
    if earlier is not None:
        return earlier, False
    model_id = model_uri.removeprefix("models:/")
    problem = logged_model_problem(model_id)
    if problem is not None:
        raise IncompleteModel(f"{model_uri} is not whole ({problem}); no version was registered")
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # The environment goes in before the version, which then names its hash.
    client.log_text(facts.run_id, facts.environment.requirements, ENVIRONMENT_ARTIFACT)
    version = client.create_model_version(
        name, source=model_uri, run_id=run_id, model_id=model_id, tags={**content, **facts.tags()}
    )
    failpoint("register.created")
    return keep_first_version(name, content, str(version.version))


def _first_whole_version(
    client: MlflowClient, name: str, content: dict[str, str], before: int | None = None
) -> str | None:
    """The earliest version of ``name`` (numbered below ``before``, if given) with these content
    tags whose model is whole."""
    try:
        query = f"name='{name}' and {content_filter(content)}"
        existing = list(client.search_model_versions(query))
    except MlflowException:  # the registered model does not exist yet
        return None
    for version in sorted(existing, key=lambda v: int(v.version)):
        if before is not None and int(version.version) >= before:
            break
        model_id = version_model_id(version)
        if model_id and logged_model_problem(model_id) is None:
            return str(version.version)
    return None


def keep_first_version(name: str, content: dict[str, str], created: str) -> tuple[str, bool]:
    """(version, whether it is new) once this run created version ``created``. Runs in other
    workspaces on one tracking server can each find no version of this content and each create
    one; each then keeps the earliest and withdraws its own, so one content has one version.
    Nothing has pointed an alias at the withdrawn one: the alias moves after registration."""
    client = MlflowClient()
    # Only an earlier version's files are checked (this run checked its own before creating it).
    first = _first_whole_version(client, name, content, before=int(created))
    if first is None:
        return created, True
    client.delete_model_version(name, created)
    return first, False


def current_alias(name: str, alias: str) -> Any | None:
    """The version ``name@alias`` points at, or None when there is none (the model or the alias
    does not exist yet). Any other registry error propagates."""
    try:
        return MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
