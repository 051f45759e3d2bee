"""Tag names trustflow writes on MLflow runs, logged models and registered versions."""

from __future__ import annotations

SHA_TAG = "trustflow.model_sha256"


PARITY_PASSED_TAG = "trustflow.onnx.parity_passed"


ONNX_SHA_TAG = "trustflow.onnx_sha256"


FAIRNESS_PASSED_TAG = "trustflow.fairness.passed"


GIT_REVISION_TAG = "trustflow.git_revision"  # of the workspace when the version was trained


CANDIDATE_KIND_TAG = "trustflow.candidate.kind"
FRAMEWORK_TAG = "trustflow.candidate.framework"
DP_SGD_TAG = "trustflow.privacy.dp_sgd"  # on a version: "true" when DP-SGD trained it


MODEL_CARD_TAG = "trustflow.model_card"


FILES_SHA_TAG = "trustflow.files_sha256"  # on a logged model: its files, hashed once uploaded


# Written into a model's folder by the registry when a version is created, after the model is
# complete: not part of what a model's file hash covers.
REGISTRY_FILES = ("registered_model_meta",)


OWNER_TAG = "trustflow.owner"  # on a run: the process that opened it (see run_owner)


REAPED_BY_TAG = "trustflow.reaped_by"  # on what a crash left behind: the run that closed it


# On a registered version: it passed the encryption parity gate, so `trustflow serve
# --encrypted` may serve it.
ENCRYPTION_PASSED_TAG = "trustflow.encryption.passed"


# On a registered version: the sha256 of the environment that trained it (its `pip freeze`,
# logged as ENVIRONMENT_ARTIFACT on the pipeline's run) and, when CI trained it, the CI run.
ENVIRONMENT_SHA_TAG = "trustflow.environment.sha256"
ENVIRONMENT_ARTIFACT = "environment/requirements.txt"
CI_RUN_URL_TAG = "trustflow.ci.run_url"


# On a pipeline's run: the Prefect flow run that opened it (`trustflow trigger` finds it so).
FLOW_RUN_TAG = "trustflow.prefect.flow_run_id"


# On a run whose champion changed and registry.announce_to is set: whether the champion-changed
# dispatch was sent, or why not.
ANNOUNCED_TAG = "trustflow.release.announced"
