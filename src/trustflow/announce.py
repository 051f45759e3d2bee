"""Telling a GitHub repository that a champion changed: a `repository_dispatch` event of type
``champion-changed`` whose payload names the model, which starts the repository's release
workflow (.github/workflows/release.yml builds, verifies and pushes its image). GitHub's REST API;
GITHUB_API_URL (set on Actions runners, and by GitHub Enterprise users) points elsewhere."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from trustflow.errors import AnnounceError, ConfigError

EVENT = "champion-changed"
DEFAULT_API_URL = "https://api.github.com"
TOKEN_VARIABLE = "GITHUB_TOKEN"


def github_token(repository: str, env: Mapping[str, str]) -> str:
    """The token the dispatch is sent with; a run that would announce and has none stops before
    any work, naming the variable."""
    token = env.get(TOKEN_VARIABLE, "")
    if not token:
        raise ConfigError(
            f"registry.announce_to is {repository} but {TOKEN_VARIABLE} is not set (a token that "
            "may write the repository's contents: it sends the champion-changed dispatch)"
        )
    return token


def announce_champion(
    repository: str, model_uri: str, env: Mapping[str, str], timeout: float = 10
) -> str:
    """Send the dispatch; the request's URL on success. GitHub answers 204 with no body."""
    url = f"{env.get('GITHUB_API_URL') or DEFAULT_API_URL}".rstrip("/")
    url = f"{url}/repos/{repository}/dispatches"
    headers = {
        "Accept": "application/vnd.github+json",
        "Authorization": f"Bearer {github_token(repository, env)}",
        "X-GitHub-Api-Version": "2022-11-28",
    }
    body = {"event_type": EVENT, "client_payload": {"model": model_uri}}
    try:
        response = httpx.post(url, json=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise AnnounceError(f"{EVENT} not sent to {url}: {exc}") from None
    if response.status_code != 204:
        try:
            message = response.json().get("message", "")
        except ValueError:
            message = response.text[:200]
        raise AnnounceError(f"{EVENT} refused by {url}: {response.status_code} {message}".strip())
    return url
