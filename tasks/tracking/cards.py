"""The model card: logged to the run and shown as the version's description."""

from __future__ import annotations

from mlflow.tracking import MlflowClient
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.tracking.tags import MODEL_CARD_TAG


@task(name="model-card", cache_policy=NO_CACHE, persist_result=False)
def log_model_card(run_id: str, name: str, version: str, card: str) -> str:
    """Log the card to the pipeline run, make it the version's description (the registry UI
    renders Markdown) and tag the version with the card's artifact URI, which is returned."""
    client = MlflowClient()
    filename = f"{name}-v{version}.md"
    client.log_text(run_id, card, f"model_card/{filename}")
    uri = f"{client.get_run(run_id).info.artifact_uri}/model_card/{filename}"
    client.update_model_version(name, version, description=card)
    client.set_model_version_tag(name, version, MODEL_CARD_TAG, uri)
    return uri
