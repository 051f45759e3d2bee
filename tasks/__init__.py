"""Thin Prefect task wrappers: load a reference, call the core, persist, return a reference."""

import os

# Pipeline runs never phone home: Prefect's temporary server, MLflow and DVC all report usage
# by default. Set before any of them is imported (flows/__init__ imports this package first).
for _name, _value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
}.items():
    os.environ.setdefault(_name, _value)
