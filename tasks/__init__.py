"""Thin Prefect task wrappers: load a reference, call the core, persist, return a reference."""

import os

# Pipeline runs never phone home: Prefect's temporary server, MLflow and DVC all report usage
# by default. Nor does MLflow print run links to stdout (it does with a tracking server), which
# belongs to the CLI's output. Set before any of them is imported (flows/__init__ imports this
# package first).
for _name, _value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "DVC_NO_ANALYTICS": "1",
    # A tracking server that goes away mid-run: retry each call for about 15 s (1, 2, 4, 8 s),
    # not MLflow's default of several minutes, then fail the run (the alias moves last).
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    # Prefect's temporary server (the local engine) gets 20 s to answer by default; a new
    # workspace's database migrates first, and on a busy 2-core machine that can take longer.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}.items():
    os.environ.setdefault(_name, _value)
