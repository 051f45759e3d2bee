"""Differential privacy: DP preprocessing statistics (OpenDP) and the privacy ledger."""
