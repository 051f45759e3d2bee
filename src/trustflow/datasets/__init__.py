"""Data sets shipped with trustflow (package data)."""
