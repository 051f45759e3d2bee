"""Prefect flows: composition, the MLflow run's lifecycle, gates, and the CLI."""

import tasks  # noqa: F401  (sets the no-telemetry environment before Prefect is imported)
