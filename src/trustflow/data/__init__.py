"""Data: sources, schema validation, splits."""
