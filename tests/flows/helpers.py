from __future__ import annotations

import json
from pathlib import Path

from mlflow.tracking import MlflowClient

from flows.cli import main


def run_cli(capsys, *args: str) -> tuple[int, dict, str]:
    """Run ``trustflow run --json --quiet`` in-process (stderr: only an error line); returns
    (exit code, JSON, stderr)."""
    code = main(["run", "--json", "--quiet", *args])
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, f"stdout must hold exactly one JSON line, got: {out!r}"
    return code, json.loads(lines[0]), err


def fails_in_one_line(capsys, ws: Path, *args: str) -> str:
    """Run in ``ws``, expecting exit 1 with one error line and no traceback; the error."""
    code, summary, err = run_cli(capsys, "--workspace", str(ws), *args)
    assert code == 1 and summary["state"] == "FAILED", summary
    assert "\n" not in summary["error"] and "Traceback" not in err
    return str(summary["error"])


def registry_and_data(ws: Path, name: str) -> tuple[list[str], str, str]:
    """What bad input must leave as it was: ``name``'s versions, its champion, and the md5 of
    the workspace's tracked ``data/<data set>.parquet`` (named like the model here)."""
    from trustflow.io import file_digest

    return versions(ws, name), champion(ws, name), file_digest(ws / "data" / f"{name}.parquet")


def client_for(ws: Path) -> MlflowClient:
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def versions(ws: Path, name: str = "adult-income") -> list[str]:
    found = client_for(ws).search_model_versions(f"name='{name}'")
    return sorted(str(v.version) for v in found)


def champion(ws: Path, name: str = "adult-income") -> str:
    return str(client_for(ws).get_model_version_by_alias(name, "champion").version)
